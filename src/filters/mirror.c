/* mirror: a live move of a device to new storage (see mirror.h).
 *
 * Regions (1 MiB by default) are the unit of everything: a write marks its
 * regions durably in the dirty log, counts itself in flight in each, writes
 * the source (the layers below) and then the target, and on the way out
 * clears a region it was the last writer of, if that region is in sync
 * (lazily: a clear reaches the log's disk with its next write). The resync
 * thread takes regions not in sync from the log one at a time; it waits for
 * a region's writers to leave, bars new ones while it copies the region from
 * the source to the target, then sets it in sync. So a write and a copy of
 * the same region never interleave, and a region in sync holds on the target
 * what it holds on the source. */
#include "filters/mirror.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/io.h"
#include "common/log.h"
#include "core/backing.h"
#include "core/device.h"
#include "core/filter.h"
#include "core/registry.h"
#include "core/store_id.h"
#include "dirtylog/dirty_log.h"

#define COPY_CHUNK (1u << 20)
#define MARK_BATCH 64
/* Persist progress this often: each time flushes the target (its dirty
 * pages from the writes too) and the log, so not too often. */
#define LOG_FLUSH_NS 1000000000ll
/* Resync threads: a copy is a read then a write, one at a time; several keep
 * the source and the target busy at once, as nbdcopy's requests in flight do. */
#define RESYNC_THREADS 4

struct mirror {
	struct device *dev;
	struct backing *target;
	char *target_path;
	/* The resync's own way to the bytes: O_DIRECT on the source's and the
	 * target's files (-1: none, e.g. tmpfs), so that a move does not push
	 * the page cache around (and, on this VM, pay for every page it
	 * would touch); the barred region keeps them coherent with writes. */
	int src_dfd, tgt_dfd;
	struct registry *reg;
	struct store_claim *claim;
	struct dirty_log *log;
	char *cfg_path, *log_path; /* state files, or NULL */
	unsigned region_shift;
	uint64_t region_size, regions, size, rate;

	pthread_mutex_t lock;	/* the counts below, the thread's life */
	pthread_cond_t cond;
	/* Per region, lock-free on the write path (the lock and COND only for
	 * the waits): a writer counts itself in INFLIGHT and then looks at
	 * COPYING; the copier sets COPYING and then looks at INFLIGHT. Both
	 * sequentially consistent, so one of the two always sees the other. */
	_Atomic uint32_t *inflight;	/* writers in each region */
	_Atomic uint8_t *copying;	/* barred: the resync copies it, or a clear checks it */
	/* Written or copied lately (see persist_progress): cleared in the log
	 * only after the target is flushed, so that the log never says clean
	 * for a region whose target bytes might not be on disk. */
	_Atomic uint8_t *pending;
	bool stop;		/* the resync thread is asked to end */
	unsigned running;	/* resync threads that have not ended */
	bool remove_files;	/* at detach: the move is over (switch, stop) */

	atomic_int state;	/* enum mirror_state */
	atomic_int error;
	atomic_ullong copied;
	atomic_ullong durable_in_sync;
	_Atomic int64_t last_persist; /* now_ns() of the last one the resync started */
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* The target failed: the mirror stops writing it, the device goes on. */
static void mirror_fail(struct mirror *m, int err, const char *what)
{
	atomic_store(&m->error, -err);
	if (atomic_exchange(&m->state, MIRROR_FAILED) == MIRROR_FAILED)
		return; /* said once, by the first */
	log_error("%s: mirror to %s failed (%s: %s): the device goes on without it; mirror_stop ends it",
		  device_name(m->dev), m->target_path, what, strerror(-err));
}

static bool active(struct mirror *m)
{
	int st = atomic_load(&m->state);

	return st == MIRROR_SYNCING || st == MIRROR_SYNCED;
}

/* ---- the write path ---- */

static void region_leave(struct mirror *m, uint64_t g)
{
	if (atomic_fetch_sub(&m->inflight[g], 1) == 1 && atomic_load(&m->copying[g])) {
		pthread_mutex_lock(&m->lock); /* the copier waits for us */
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
	}
}

/* Bar writers from region G: with WAIT, until those in flight are out;
 * without, only if none is in (else false, and nothing barred). */
static bool region_bar(struct mirror *m, uint64_t g, bool wait)
{
	atomic_fetch_add(&m->copying[g], 1);
	if (!wait && atomic_load(&m->inflight[g])) {
		atomic_fetch_sub(&m->copying[g], 1);
		pthread_mutex_lock(&m->lock);
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
		return false;
	}
	pthread_mutex_lock(&m->lock);
	while (atomic_load(&m->inflight[g]))
		pthread_cond_wait(&m->cond, &m->lock);
	pthread_mutex_unlock(&m->lock);
	return true;
}

static void region_unbar(struct mirror *m, uint64_t g)
{
	atomic_fetch_sub(&m->copying[g], 1);
	pthread_mutex_lock(&m->lock); /* writers may wait for this region */
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

static void regions_enter(struct mirror *m, uint64_t first, uint64_t last)
{
	for (;;) {
		uint64_t busy = UINT64_MAX;

		for (uint64_t g = first; g <= last; g++)
			atomic_fetch_add(&m->inflight[g], 1);
		for (uint64_t g = first; g <= last && busy == UINT64_MAX; g++)
			if (atomic_load(&m->copying[g]))
				busy = g;
		if (busy == UINT64_MAX)
			return;
		/* Being copied: out again, wait for the copy, and retry. */
		for (uint64_t g = first; g <= last; g++)
			region_leave(m, g);
		pthread_mutex_lock(&m->lock);
		while (atomic_load(&m->copying[busy]))
			pthread_cond_wait(&m->cond, &m->lock);
		pthread_mutex_unlock(&m->lock);
	}
}

static void regions_leave(struct mirror *m, uint64_t first, uint64_t last)
{
	for (uint64_t g = first; g <= last; g++) {
		atomic_store(&m->pending[g], 1);
		region_leave(m, g);
	}
}

static int regions_mark(struct mirror *m, uint64_t first, uint64_t last)
{
	uint64_t batch[MARK_BATCH];
	size_t n = 0;

	for (uint64_t g = first; g <= last; g++) {
		batch[n++] = g;
		if (n == MARK_BATCH || g == last) {
			int r = dirty_log_mark_flush(m->log, batch, n);

			if (r < 0)
				return r;
			n = 0;
		}
	}
	return 0;
}

enum change { CHANGE_WRITE, CHANGE_TRIM, CHANGE_ZERO };

static int mirror_change(struct filter *f, enum change op, const void *buf, uint64_t count, uint64_t offset,
			 uint32_t flags)
{
	struct mirror *m = f->priv;
	uint64_t first, last;
	int r, t;

	if (!active(m) || count == 0)
		goto below;
	first = offset >> m->region_shift;
	last = (offset + count - 1) >> m->region_shift;
	if (last >= m->regions)
		goto below; /* past the target: the range check below refuses it */
	regions_enter(m, first, last);
	r = regions_mark(m, first, last);
	if (r < 0)
		mirror_fail(m, r, "the dirty log");
	switch (op) {
	case CHANGE_WRITE: r = filter_next_pwrite(f, buf, count, offset, flags); break;
	case CHANGE_TRIM: r = filter_next_trim(f, count, offset, flags); break;
	default: r = filter_next_zero(f, count, offset, flags); break;
	}
	if (r == 0 && active(m)) {
		/* A trimmed source reads back zeroes (files, and what we advertise
		 * for devices): the target gets the zeroes themselves. */
		t = op == CHANGE_WRITE ? backing_pwrite(m->target, buf, count, offset, flags)
				       : backing_zero(m->target, count, offset, flags);
		if (t < 0)
			mirror_fail(m, t, "a write to the target");
	}
	regions_leave(m, first, last);
	return r;
below:
	switch (op) {
	case CHANGE_WRITE: return filter_next_pwrite(f, buf, count, offset, flags);
	case CHANGE_TRIM: return filter_next_trim(f, count, offset, flags);
	default: return filter_next_zero(f, count, offset, flags);
	}
}

static int mr_pwrite(struct filter *f, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	return mirror_change(f, CHANGE_WRITE, buf, count, offset, flags);
}

static int mr_trim(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	return mirror_change(f, CHANGE_TRIM, NULL, count, offset, flags);
}

static int mr_zero(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	return mirror_change(f, CHANGE_ZERO, NULL, count, offset, flags);
}

static int mr_flush(struct filter *f, uint32_t flags)
{
	struct mirror *m = f->priv;
	int r = filter_next_flush(f, flags), t;

	if (r == 0 && active(m) && (t = backing_flush(m->target)) < 0)
		mirror_fail(m, t, "a flush of the target");
	return r;
}

/* ---- the resync ---- */

struct copy {
	uint64_t region;
	void *buf;
	int src_err, dst_err;
};

/* On the mirror filter F, under the device's drain lock (shared). */
static int copy_region(struct filter *f, void *opaque)
{
	struct mirror *m = f->priv;
	struct copy *c = opaque;
	uint64_t off = c->region << m->region_shift, end = off + m->region_size;

	if (end > m->size)
		end = m->size;
	region_bar(m, c->region, true);
	for (; off < end && !c->src_err && !c->dst_err; off += COPY_CHUNK) {
		uint64_t len = end - off < COPY_CHUNK ? end - off : COPY_CHUNK;
		bool direct = io_direct_aligned(c->buf, len, off);

		if (direct && m->src_dfd >= 0) {
			ssize_t got = io_pread_all(m->src_dfd, c->buf, len, off);

			c->src_err = got < 0 ? (int)got : (uint64_t)got < len ? -EIO : 0;
		} else {
			c->src_err = filter_next_pread(f, c->buf, len, off, 0);
		}
		if (!c->src_err)
			c->dst_err = direct && m->tgt_dfd >= 0 ? io_pwrite_all(m->tgt_dfd, c->buf, len, off, 0)
							       : backing_pwrite(m->target, c->buf, len, off, 0);
		if (!c->src_err && !c->dst_err)
			atomic_fetch_add(&m->copied, len);
	}
	region_unbar(m, c->region);
	return 0;
}

/* Wait until DEADLINE (monotonic ns) or a stop; true if asked to stop. */
static bool pause_until(struct mirror *m, int64_t deadline)
{
	struct timespec ts;
	bool stop;

	pthread_mutex_lock(&m->lock);
	ts.tv_sec = deadline / 1000000000ll;
	ts.tv_nsec = deadline % 1000000000ll;
	while (!m->stop && now_ns() < deadline)
		pthread_cond_timedwait(&m->cond, &m->lock, &ts);
	stop = m->stop;
	pthread_mutex_unlock(&m->lock);
	return stop;
}

/* Make what is done durable: the target flushed, then the regions idle for
 * a round cleared (those in sync, with no writer in flight and none since),
 * then the log written and flushed. The progress shown is the
 * clean regions on disk: what a restart finds in sync. */
static void persist_progress(struct mirror *m)
{
	uint64_t *done = malloc(m->regions * sizeof(*done)), n = 0;
	struct dirty_log_stats st;

	if (!done)
		return;
	/* A region is cleared once it has been idle for a whole round (1:
	 * written this round, 2: the round before): a hot region stays dirty
	 * rather than cost a mark and a flush again at its next write. */
	for (uint64_t g = 0; g < m->regions; g++) {
		uint8_t two = 2, one = 1;

		if (atomic_compare_exchange_strong(&m->pending[g], &two, 0))
			done[n++] = g;
		else if (two == 1)
			atomic_compare_exchange_strong(&m->pending[g], &one, 2);
	}
	if (n && active(m)) {
		int r = backing_flush(m->target);

		if (r < 0) {
			mirror_fail(m, r, "a flush of the target");
			n = 0;
		}
	}
	/* Each clear with the region barred: a writer in flight, or one that
	 * came and went since (PENDING), keeps it dirty; none can mark it
	 * between the check and the clear. */
	for (uint64_t i = 0; i < n; i++)
		if (region_bar(m, done[i], false)) {
			if (!atomic_load(&m->pending[done[i]]))
				dirty_log_clear(m->log, &done[i], 1); /* only if in sync: the log checks */
			region_unbar(m, done[i]);
		}
	free(done);
	dirty_log_get_stats(m->log, &st);
	if (dirty_log_flush(m->log) == 0)
		atomic_store(&m->durable_in_sync, st.region_count - st.dirty_count);
}

/* The target is no longer ours to keep from others. Not under a drain lock. */
static void unclaim(struct mirror *m)
{
	struct store_claim *c;

	pthread_mutex_lock(&m->lock);
	c = m->claim;
	m->claim = NULL;
	pthread_mutex_unlock(&m->lock);
	if (c)
		registry_unclaim(m->reg, c);
}

static void *resync_thread(void *arg)
{
	struct mirror *m = arg;
	struct device *dev = m->dev;
	struct copy c = { 0 };
	int64_t t0 = now_ns();
	uint64_t start_copied = atomic_load(&m->copied);

	c.buf = io_alloc_aligned(COPY_CHUNK);
	while (c.buf && !device_killed(dev) && atomic_load(&m->state) != MIRROR_FAILED) {
		int r;

		pthread_mutex_lock(&m->lock);
		r = m->stop;
		pthread_mutex_unlock(&m->lock);
		if (r)
			break;
		r = dirty_log_get_resync_work(m->log, &c.region);
		if (r <= 0) {
			int syncing = MIRROR_SYNCING;

			persist_progress(m);
			if (r == 0 && dirty_log_sync_count(m->log) == m->regions &&
			    atomic_compare_exchange_strong(&m->state, &syncing, MIRROR_SYNCED))
				log_info("%s: mirror to %s is in sync (%" PRIu64 " regions); mirror_switch moves the device",
					 device_name(dev), m->target_path, m->regions);
			if (pause_until(m, now_ns() + 1000000000ll))
				break;
			continue;
		}
		c.src_err = c.dst_err = 0;
		r = device_with_filter(dev, &mirror_filter_ops, copy_region, &c);
		if (r < 0 || c.src_err) {
			/* The source could not be read: the region stays to do, and
			 * the next pass tries it again. */
			dirty_log_set_region_sync(m->log, c.region, false);
			if (r == 0)
				log_warn("%s: mirror: region %" PRIu64 " not copied (%s reading the source); tried "
					 "again later", device_name(dev), c.region, strerror(-c.src_err));
			if (r < 0 || pause_until(m, now_ns() + 1000000000ll))
				break;
			continue;
		}
		if (c.dst_err) {
			mirror_fail(m, c.dst_err, "a copy to the target");
			break;
		}
		dirty_log_set_region_sync(m->log, c.region, true);
		atomic_store(&m->pending[c.region], 1);
		if (dirty_log_sync_count(m->log) == m->regions) {
			int syncing = MIRROR_SYNCING;

			persist_progress(m);
			if (atomic_compare_exchange_strong(&m->state, &syncing, MIRROR_SYNCED))
				log_info("%s: mirror to %s is in sync (%" PRIu64 " regions); mirror_switch moves the device",
					 device_name(dev), m->target_path, m->regions);
		}
		{
			int64_t last = atomic_load(&m->last_persist), t = now_ns();

			/* one thread of the resync at a time, once a period */
			if (t - last > LOG_FLUSH_NS && atomic_compare_exchange_strong(&m->last_persist, &last, t))
				persist_progress(m);
		}
		if (m->rate) {
			uint64_t done = atomic_load(&m->copied) - start_copied;
			int64_t due = t0 + (int64_t)(done * 1000000000.0 / (double)m->rate);

			if (due > now_ns() && pause_until(m, due))
				break;
		}
	}
	if (!c.buf)
		mirror_fail(m, -ENOMEM, "the resync's buffer");
	free(c.buf);
	persist_progress(m);
	if (device_killed(dev))
		unclaim(m);
	pthread_mutex_lock(&m->lock);
	m->running--;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	/* Ours may be the device's last reference: the detach then frees M,
	 * which this thread does not touch again. */
	device_put(dev);
	return NULL;
}

static int thread_start(struct mirror *m)
{
	pthread_t th;
	int r = 0;

	pthread_mutex_lock(&m->lock);
	m->stop = false;
	pthread_mutex_unlock(&m->lock);
	for (unsigned i = 0; i < RESYNC_THREADS; i++) {
		pthread_mutex_lock(&m->lock);
		m->running++;
		pthread_mutex_unlock(&m->lock);
		device_get(m->dev);
		r = pthread_create(&th, NULL, resync_thread, m);
		if (r) {
			device_put(m->dev);
			pthread_mutex_lock(&m->lock);
			m->running--;
			pthread_mutex_unlock(&m->lock);
			return i ? 0 : -r; /* fewer threads still resync */
		}
		pthread_detach(th);
	}
	return 0;
}

static void thread_stop(struct mirror *m)
{
	pthread_mutex_lock(&m->lock);
	m->stop = true;
	pthread_cond_broadcast(&m->cond);
	while (m->running)
		pthread_cond_wait(&m->cond, &m->lock);
	pthread_mutex_unlock(&m->lock);
}

/* ---- life ---- */

static void mirror_free(struct mirror *m)
{
	if (!m)
		return;
	/* The claim went before (mirror_stop, mirror_switch, mirror_shutdown,
	 * the thread when its device was removed): this runs under the drain
	 * lock, which comes after the registry's. */
	if (m->log)
		dirty_log_destroy(m->log);
	if (m->target)
		backing_close(m->target);
	if (m->src_dfd >= 0)
		close(m->src_dfd);
	if (m->tgt_dfd >= 0)
		close(m->tgt_dfd);
	if (m->remove_files) {
		if (m->cfg_path)
			unlink(m->cfg_path);
		if (m->log_path)
			unlink(m->log_path);
	}
	free((void *)m->inflight);
	free((void *)m->copying);
	free((void *)m->pending);
	free(m->target_path);
	free(m->cfg_path);
	free(m->log_path);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->cond);
	free(m);
}

static int mr_attach(struct filter *f, void *ctx)
{
	if (!ctx)
		return -EINVAL; /* only mirror_start attaches it */
	f->priv = ctx;
	return 0;
}

static int mr_detach(struct filter *f)
{
	struct mirror *m = f->priv;
	unsigned running;

	pthread_mutex_lock(&m->lock);
	running = m->running;
	pthread_mutex_unlock(&m->lock);
	if (running)
		return -EBUSY; /* mirror_stop and mirror_switch stop it first */
	mirror_free(m);
	f->priv = NULL;
	return 0;
}

const struct filter_ops mirror_filter_ops = {
	.name = "mirror",
	.attach = mr_attach,
	.detach = mr_detach,
	.pwrite = mr_pwrite,
	.trim = mr_trim,
	.zero = mr_zero,
	.flush = mr_flush,
};

static int save_config(struct mirror *m)
{
	char tmp[4200];
	FILE *f;
	int fd, r = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", m->cfg_path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return r;
	}
	fprintf(f, "target=%s\nregion_size=%" PRIu64 "\nrate=%" PRIu64 "\n", m->target_path, m->region_size,
		m->rate);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		r = -errno;
	fclose(f);
	if (r == 0 && rename(tmp, m->cfg_path) != 0)
		r = -errno;
	if (r)
		unlink(tmp);
	return r;
}

int mirror_start(struct device *dev, const struct mirror_args *a, char *err, size_t errlen)
{
	struct store_id ids[STORE_IDS_MAX];
	struct byte_range all = { 0, UINT64_MAX };
	struct device *other = NULL;
	struct mirror *m;
	size_t n_ids;
	int r;

	if (device_has_filter(dev, &mirror_filter_ops)) {
		snprintf(err, errlen, "%s is being mirrored already", device_name(dev));
		return -EBUSY;
	}
	if (!a->target || a->target[0] != '/') {
		snprintf(err, errlen, "the target must be an absolute path");
		return -EINVAL;
	}
	if (a->region_size && (a->region_size < (64u << 10) || (a->region_size & (a->region_size - 1)) ||
			       a->region_size > (1ull << 30))) {
		snprintf(err, errlen, "--region-size %" PRIu64 ": a power of two from 64K to 1G", a->region_size);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* pause_until's deadlines */
		pthread_cond_init(&m->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_mutex_init(&m->lock, NULL);
	m->src_dfd = m->tgt_dfd = -1;
	m->dev = dev;
	m->reg = a->reg;
	m->rate = a->rate;
	m->size = device_size(dev);
	m->region_size = a->region_size ? a->region_size : MIRROR_REGION_DEFAULT;
	while ((1ull << m->region_shift) < m->region_size)
		m->region_shift++;
	m->regions = (m->size + m->region_size - 1) >> m->region_shift;
	m->target_path = strdup(a->target);
	atomic_init(&m->state, MIRROR_SYNCING);
	if (!m->target_path || m->size == 0) {
		r = m->size ? -ENOMEM : -EINVAL;
		snprintf(err, errlen, "%s", m->size ? "out of memory" : "the device is empty");
		goto fail;
	}
	r = backing_open(a->target, false, &m->target);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", a->target, strerror(-r));
		goto fail;
	}
	if (device_path(dev) && device_path(dev)[0] == '/')
		m->src_dfd = open(device_path(dev), O_RDONLY | O_DIRECT | O_CLOEXEC);
	m->tgt_dfd = open(a->target, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (backing_size(m->target) < m->size) {
		snprintf(err, errlen, "%s holds %" PRIu64 " bytes, less than the device's %" PRIu64, a->target,
			 backing_size(m->target), m->size);
		r = -ENOSPC;
		goto fail;
	}
	if (store_ids_of_path(a->target, ids, &n_ids) == 0) {
		r = registry_claim(a->reg, ids, n_ids, &all, 1, m, &m->claim, &other);
		if (r < 0) {
			snprintf(err, errlen, "%s is in use: %s", a->target,
				 r == -EBUSY && other ? device_name(other) : "difference storage or a mirror");
			if (r == -EBUSY && other && other == dev)
				snprintf(err, errlen, "%s is the device's own store", a->target);
			device_put(other);
			goto fail;
		}
	}
	m->inflight = calloc(m->regions, sizeof(*m->inflight));
	m->copying = calloc(m->regions, sizeof(*m->copying));
	m->pending = calloc(m->regions, sizeof(*m->pending));
	if (!m->inflight || !m->copying || !m->pending) {
		r = -ENOMEM;
		goto fail;
	}
	if (a->state_dir) {
		if (asprintf(&m->cfg_path, "%s/%s.mirror", a->state_dir, device_name(dev)) < 0 ||
		    asprintf(&m->log_path, "%s/%s.mirror-log", a->state_dir, device_name(dev)) < 0) {
			m->cfg_path = m->log_path = NULL;
			r = -ENOMEM;
			goto fail;
		}
		if (!a->restore) {
			int fd = open(m->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

			if (fd < 0) {
				r = -errno;
				snprintf(err, errlen, "%s: %s", m->log_path, strerror(errno));
				goto fail;
			}
			close(fd);
		}
	}
	{
		struct dirty_log_config cfg = {
			.name = device_name(dev), .type = m->log_path ? "disk" : "core",
			.dev_sectors = (m->size + 511) / 512, .region_sectors = (uint32_t)(m->region_size >> 9),
			.sync = DIRTY_LOG_FORCESYNC, .disk_path = m->log_path, .known = a->restore,
		};

		if (cfg.region_sectors > cfg.dev_sectors) /* a device smaller than a region */
			cfg.dev_sectors = cfg.region_sectors;
		r = dirty_log_create(&m->log, &cfg);
		if (r == 0)
			r = dirty_log_resume(m->log);
		if (r < 0) {
			snprintf(err, errlen, "the mirror's dirty log: %s", strerror(-r));
			goto fail;
		}
	}
	{
		struct dirty_log_stats st;

		dirty_log_get_stats(m->log, &st);
		atomic_init(&m->durable_in_sync, st.region_count - st.dirty_count);
	}
	if (m->cfg_path && (r = save_config(m)) < 0) {
		snprintf(err, errlen, "%s: %s", m->cfg_path, strerror(-r));
		goto fail;
	}
	r = device_attach(dev, &mirror_filter_ops, m);
	if (r < 0) {
		snprintf(err, errlen, "attaching the mirror: %s", strerror(-r));
		goto fail;
	}
	log_info("%s: mirroring to %s, %" PRIu64 " regions of %" PRIu64 " bytes, %" PRIu64 " in sync%s", device_name(dev),
		 m->target_path, m->regions, m->region_size, dirty_log_sync_count(m->log),
		 a->restore ? " (resumed from the log)" : "");
	r = thread_start(m);
	if (r < 0) /* the filter still mirrors writes; the status says syncing */
		log_error("%s: mirror: cannot start the resync: %s", device_name(dev), strerror(-r));
	return 0;
fail:
	m->remove_files = !a->restore;
	unclaim(m);
	mirror_free(m);
	return r;
}

static int get_status(struct filter *f, void *opaque)
{
	struct mirror *m = f->priv;
	struct mirror_status *st = opaque;

	st->state = (enum mirror_state)atomic_load(&m->state);
	snprintf(st->target, sizeof(st->target), "%s", m->target_path);
	st->region_size = m->region_size;
	st->regions = m->regions;
	st->in_sync = atomic_load(&m->durable_in_sync);
	st->copied = atomic_load(&m->copied);
	st->rate = m->rate;
	st->error = atomic_load(&m->error);
	return 0;
}

int mirror_get_status(struct device *dev, struct mirror_status *st)
{
	return device_with_filter(dev, &mirror_filter_ops, get_status, st);
}

static int get_mirror(struct filter *f, void *opaque)
{
	*(struct mirror **)opaque = f->priv;
	return 0;
}

int mirror_switch(struct device *dev, struct registry *reg, char *err, size_t errlen)
{
	struct mirror *m = NULL;
	struct backing *old;
	struct filter *f;
	int r;

	/* The filter stays while a control command holds DEV: only switch and
	 * stop detach it, and the control plane runs them one at a time. */
	r = device_with_filter(dev, &mirror_filter_ops, get_mirror, &m);
	if (r < 0) {
		snprintf(err, errlen, "%s is not being mirrored", device_name(dev));
		return r;
	}
	if (atomic_load(&m->state) == MIRROR_FAILED) {
		snprintf(err, errlen, "the mirror failed (%s): mirror_stop ends it", strerror(atomic_load(&m->error)));
		return -EIO;
	}
	if (atomic_load(&m->state) == MIRROR_SWITCHED) {
		snprintf(err, errlen, "%s is on %s already", device_name(dev), m->target_path);
		return -EALREADY;
	}
	thread_stop(m);
	persist_progress(m);
	if (atomic_load(&m->state) != MIRROR_SYNCED || dirty_log_sync_count(m->log) != m->regions) {
		snprintf(err, errlen, "not in sync yet: %" PRIu64 " of %" PRIu64 " regions", dirty_log_sync_count(m->log),
			 m->regions);
		if (atomic_load(&m->state) != MIRROR_FAILED)
			thread_start(m);
		return -EBUSY;
	}
	device_quiesce(dev);
	f = device_filter_quiesced(dev, &mirror_filter_ops);
	r = f && f->priv == m ? backing_flush(m->target) : -ENOENT;
	if (r == 0 && dirty_log_sync_count(m->log) != m->regions)
		r = -EBUSY; /* a write failed the target meanwhile */
	if (r < 0) {
		device_resume(dev);
		snprintf(err, errlen, "the target: %s", strerror(-r));
		if (r != -ENOENT && atomic_load(&m->state) != MIRROR_FAILED)
			thread_start(m);
		return r;
	}
	old = device_swap_backing_quiesced(dev, m->target);
	m->target = NULL;
	atomic_store(&m->state, MIRROR_SWITCHED); /* from now on a pass-through */
	device_resume(dev);
	backing_close(old);
	unclaim(m); /* the device's store now: the registry sees it as one */
	/* The move is over: a restart must not resume it. */
	if (m->cfg_path)
		unlink(m->cfg_path);
	if (m->log_path)
		unlink(m->log_path);
	log_info("%s: switched to %s", device_name(dev), m->target_path);
	return 0;
}

int mirror_stop(struct device *dev, struct registry *reg)
{
	struct mirror *m = NULL;
	int r = device_with_filter(dev, &mirror_filter_ops, get_mirror, &m);

	(void)reg;
	if (r < 0)
		return r;
	thread_stop(m);
	unclaim(m);
	m->remove_files = true;
	r = device_detach(dev, &mirror_filter_ops);
	if (r == 0)
		log_info("%s: mirror stopped; the device stays on its store", device_name(dev));
	return r;
}

void mirror_shutdown(struct device *dev)
{
	struct mirror *m = NULL;

	if (device_with_filter(dev, &mirror_filter_ops, get_mirror, &m) == 0) {
		thread_stop(m); /* the state files stay: the next start resumes */
		unclaim(m);
	}
}

void mirror_restore_all(struct registry *reg, const char *state_dir)
{
	struct device **devs;
	size_t n;

	if (!state_dir || !(devs = registry_list(reg, &n)))
		return;
	for (size_t i = 0; i < n; i++) {
		char path[4200], line[4096], target[4096] = "", err[512];
		struct mirror_args a = { .state_dir = state_dir, .reg = reg, .restore = true };
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s.mirror", state_dir, device_name(devs[i]));
		f = fopen(path, "re");
		if (f) {
			while (fgets(line, sizeof(line), f)) {
				line[strcspn(line, "\n")] = '\0';
				if (!strncmp(line, "target=", 7))
					snprintf(target, sizeof(target), "%s", line + 7);
				else if (!strncmp(line, "region_size=", 12))
					a.region_size = strtoull(line + 12, NULL, 10);
				else if (!strncmp(line, "rate=", 5))
					a.rate = strtoull(line + 5, NULL, 10);
			}
			fclose(f);
			a.target = target;
			if (mirror_start(devs[i], &a, err, sizeof(err)) < 0)
				log_error("%s: the mirror in %s could not be resumed: %s", device_name(devs[i]), path, err);
		}
		device_put(devs[i]);
	}
	free(devs);
}
