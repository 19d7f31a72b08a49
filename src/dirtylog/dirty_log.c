/* The dirty-region log (see dirty_log.h): the clean, sync and recovering
 * bits, the CONSTRUCTED / RESUMED / SUSPENDED state machine, resync work,
 * dm's status lines and the statistics; for a disk log also the copy of the
 * bits on disk, kept current by flushes that write only the pages that
 * changed, and the group commit of dirty_log_mark_flush(). The format and
 * the I/O calls are dirty_log_disk.c's.
 *
 * One mutex guards everything but the fields fixed at create. It is a leaf:
 * nothing else is locked while it is held. Disk I/O runs without it, by one
 * thread at a time (the "writer", io_busy), from a snapshot of the bits the
 * writer took under the lock; resume alone does its I/O with the lock held,
 * having waited for the writer to finish, as it is rare and everything else
 * must wait for its bits anyway. */
#include "dirtylog/dirty_log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/io.h"
#include "common/log.h"
#include "dirtylog/dirty_log_disk.h"

enum dl_kind {
	KIND_CORE,
	KIND_DISK,
	KIND_CLUSTERED_CORE,
	KIND_CLUSTERED_DISK,
};

static const char *const kind_names[] = {
	[KIND_CORE] = "core",
	[KIND_DISK] = "disk",
	[KIND_CLUSTERED_CORE] = "clustered-core",
	[KIND_CLUSTERED_DISK] = "clustered-disk",
};

/* A caller of a flush, on the log's list until a flush that started after
 * it joined has finished; it lives on the caller's stack. */
struct dl_waiter {
	struct dl_waiter *next;
	uint64_t gen;	/* the flush that covers this caller */
	int result;
	bool done;
};

struct dirty_log {
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* a flush finished */

	/* Fixed at create. */
	char *name;
	enum dl_kind kind;
	bool disk;
	enum dirty_log_sync sync;
	bool block_on_error;
	bool known;
	uint32_t region_sectors;
	uint64_t region_count;
	size_t nwords;		/* 64-bit words of each bitset */
	char *path;		/* a disk log's file or device */
	char *dev;		/* its name in the status lines: MAJOR:MINOR or the path */
	int fd;

	/* Under the lock. */
	enum dirty_log_state state;
	bool recovery_halted;
	bool failed;		/* a disk I/O failed: INFO says D */
	uint64_t *clean;	/* 1: clean; dm-log's clean_bits */
	uint64_t *in_sync;	/* 1: in sync */
	uint64_t *recovering;	/* handed out by get_resync_work, not settled */
	uint64_t clean_count;
	uint64_t sync_count;
	uint64_t sync_search;	/* dm-log's: where the search for resync work goes on */
	/* cmirrord's priority list: regions is_remote_recovering was asked
	 * about, newest first; PRIO_BITS says which are on it. */
	uint64_t *prio;
	size_t prio_n, prio_cap;
	uint64_t *prio_bits;

	/* A disk log's: the buffer as on disk, and what is needed to write
	 * only what changed and to know what is durable. BUF, IO_PAGES and
	 * SNAP are the writer's while io_busy is set; the rest is the lock's. */
	void *buf;
	size_t buf_size;
	size_t npages;
	uint64_t *pages_changed;	/* pages whose bits changed since their last write */
	uint64_t *io_pages;		/* the pages the writer is writing */
	uint64_t *snap;			/* the clean words the writer's pages carry */
	/* Regions whose dirty bit is on stable storage: set when a write and
	 * fdatasync carrying them dirty completes, cleared when a write
	 * carrying them clean starts. */
	uint64_t *durable;
	bool dirtied;		/* a region not durably dirty was marked since the last fdatasync */
	bool sync_wanted;	/* a mark_flush waits: the next flush syncs */
	bool io_busy;		/* a writer is at work, without the lock */
	uint64_t gen_started;	/* flushes started */
	struct dl_waiter *waiters;
	uint64_t writes, flushes;
};

/* ---- bits ---- */

static inline bool bit_test(const uint64_t *b, uint64_t i)
{
	return (b[i / 64] >> (i % 64)) & 1;
}

static inline void bit_set(uint64_t *b, uint64_t i)
{
	b[i / 64] |= 1ull << (i % 64);
}

static inline void bit_clear(uint64_t *b, uint64_t i)
{
	b[i / 64] &= ~(1ull << (i % 64));
}

/* The bits of word W that stand for regions: bits past the count stay 0. */
static inline uint64_t word_mask(const struct dirty_log *log, size_t w)
{
	unsigned tail = (unsigned)(log->region_count % 64);

	return (w + 1 == log->nwords && tail) ? (1ull << tail) - 1 : ~0ull;
}

static void bits_fill(const struct dirty_log *log, uint64_t *b, bool one)
{
	memset(b, one ? 0xff : 0, log->nwords * sizeof(*b));
	if (one && log->nwords)
		b[log->nwords - 1] &= word_mask(log, log->nwords - 1);
}

static void bits_fill_range(uint64_t *b, uint64_t from, uint64_t to, bool one)
{
	for (uint64_t i = from; i < to; i++) {
		if (i % 64 == 0 && to - i >= 64) {
			b[i / 64] = one ? ~0ull : 0;
			i += 63;
		} else if (one) {
			bit_set(b, i);
		} else {
			bit_clear(b, i);
		}
	}
}

static uint64_t bits_count(const uint64_t *b, size_t nwords)
{
	uint64_t n = 0;

	for (size_t w = 0; w < nwords; w++)
		n += (uint64_t)__builtin_popcountll(b[w]);
	return n;
}

/* The first region at or after FROM whose bit in B is 0, or the count. */
static uint64_t bits_next_zero(const struct dirty_log *log, const uint64_t *b, uint64_t from)
{
	for (size_t w = from / 64; w < log->nwords; w++) {
		uint64_t z = ~b[w] & word_mask(log, w);

		if (w == from / 64)
			z &= ~0ull << (from % 64);
		if (z)
			return (uint64_t)w * 64 + (uint64_t)__builtin_ctzll(z);
	}
	return log->region_count;
}

/* ---- state checks ---- */

static int check_resumed(struct dirty_log *log, const char *what)
{
	if (log->state == DIRTY_LOG_RESUMED)
		return 0;
	log_warn("dirty log %s: %s while the log is not resumed", log->name, what);
	return -EINVAL;
}

static int check_region(struct dirty_log *log, uint64_t region, const char *what)
{
	if (region < log->region_count)
		return 0;
	log_warn("dirty log %s: %s of region %" PRIu64 ", past the last (%" PRIu64 " regions)",
		 log->name, what, region, log->region_count);
	return -EINVAL;
}

/* Either every region of a call is good or none is applied. */
static int check_regions(struct dirty_log *log, const uint64_t *regions, size_t n, const char *what)
{
	int r = check_resumed(log, what);

	if (r < 0)
		return r;
	if (n && !regions) {
		log_warn("dirty log %s: %s of %zu regions without the regions", log->name, what, n);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if ((r = check_region(log, regions[i], what)) < 0)
			return r;
	return 0;
}

/* ---- the disk copy ---- */

static void page_changed(struct dirty_log *log, uint64_t region)
{
	if (log->disk)
		bit_set(log->pages_changed, dl_disk_word_page((size_t)(region / 64)));
}

static void mark_one(struct dirty_log *log, uint64_t region)
{
	if (!bit_test(log->clean, region))
		return;
	bit_clear(log->clean, region);
	log->clean_count--;
	page_changed(log, region);
	/* A region whose dirty bit is still durable on disk (cleared in
	 * memory, not written since) needs no fdatasync to be dirty again. */
	if (log->disk && !bit_test(log->durable, region))
		log->dirtied = true;
}

/* Complete the waiters that flush GEN covers, with R. */
static void complete_waiters(struct dirty_log *log, uint64_t gen, int r)
{
	struct dl_waiter **pp = &log->waiters;

	while (*pp) {
		struct dl_waiter *w = *pp;

		if (w->gen <= gen) {
			w->result = r;
			w->done = true;
			*pp = w->next;
		} else {
			pp = &w->next;
		}
	}
}

/* Write the pages in IO_PAGES from SNAP, in runs of adjacent pages. */
static int write_pages(struct dirty_log *log, bool *wrote)
{
	size_t p = 0;

	*wrote = false;
	while (p < log->npages) {
		size_t q, first, n;

		if (!bit_test(log->io_pages, p)) {
			p++;
			continue;
		}
		for (q = p; q < log->npages && bit_test(log->io_pages, q); q++) {
			dl_disk_page_words(q, log->nwords, &first, &n);
			dl_disk_put_words(log->buf, log->snap, first, n);
		}
		if (dl_disk_write(log->name, log->path, log->fd, log->buf, p * DL_DISK_PAGE,
				  (q - p) * DL_DISK_PAGE) < 0)
			return -EIO;
		*wrote = true;
		p = q;
	}
	return 0;
}

/* One flush, by the writer: called with the lock held and no writer at
 * work; returns with the lock held. The pages that changed are copied under
 * the lock, written and (when a region was marked dirty since the last one,
 * or a mark_flush waits) flushed without it; then every waiter that joined
 * before the copy is completed with the result. */
static void run_flush(struct dirty_log *log)
{
	bool need_sync = log->dirtied || log->sync_wanted;
	bool any = false, wrote = false, synced = false;
	uint64_t gen;
	int r = 0;

	for (size_t p = 0; p < log->npages; p++) {
		size_t first, n;

		if (!bit_test(log->pages_changed, p))
			continue;
		bit_clear(log->pages_changed, p);
		bit_set(log->io_pages, p);
		any = true;
		dl_disk_page_words(p, log->nwords, &first, &n);
		for (size_t w = first; w < first + n; w++) {
			log->snap[w] = log->clean[w];
			/* From now on the disk may say clean. */
			log->durable[w] &= ~log->snap[w];
		}
	}
	log->dirtied = false;
	log->sync_wanted = false;
	gen = ++log->gen_started;
	log->io_busy = true;
	pthread_mutex_unlock(&log->lock);

	if (any)
		r = write_pages(log, &wrote);
	if (r == 0 && need_sync) {
		r = dl_disk_sync(log->name, log->path, log->fd);
		synced = r == 0;
	}

	pthread_mutex_lock(&log->lock);
	if (wrote)
		log->writes++;
	if (synced)
		log->flushes++;
	if (r == 0 && need_sync) {
		for (size_t p = 0; p < log->npages; p++) {
			size_t first, n;

			if (!bit_test(log->io_pages, p))
				continue;
			dl_disk_page_words(p, log->nwords, &first, &n);
			for (size_t w = first; w < first + n; w++)
				log->durable[w] = ~log->snap[w] & word_mask(log, w);
		}
	} else if (r < 0) {
		/* What reached the disk is unknown: the next flush writes
		 * these pages again, and flushes if this one was to. */
		log->failed = true;
		for (size_t w = 0; w < (log->npages + 63) / 64; w++)
			log->pages_changed[w] |= log->io_pages[w];
		if (need_sync)
			log->dirtied = true;
	}
	memset(log->io_pages, 0, (log->npages + 63) / 64 * sizeof(uint64_t));
	complete_waiters(log, gen, r);
	log->io_busy = false;
	pthread_cond_broadcast(&log->cond);
}

/* Wait for a flush that starts after this call, leading it when no writer
 * is at work. SYNC: it must fdatasync (a mark_flush). Lock held. */
static int flush_locked(struct dirty_log *log, bool sync)
{
	struct dl_waiter w = { .gen = log->gen_started + 1 };

	if (sync)
		log->sync_wanted = true;
	w.next = log->waiters;
	log->waiters = &w;
	while (!w.done) {
		if (!log->io_busy)
			run_flush(log);
		else
			pthread_cond_wait(&log->cond, &log->lock);
	}
	return w.result;
}

/* Wait until no writer is at work and no caller waits for a flush: resume
 * may then use the buffer and replace the bits. */
static void wait_idle(struct dirty_log *log)
{
	while (log->io_busy || log->waiters) {
		if (!log->io_busy)
			run_flush(log);
		else
			pthread_cond_wait(&log->cond, &log->lock);
	}
}

/* The buffer as the bits in memory say, after a read that is not used: a
 * later flush writes pages of it (the header's among them). */
static void restore_buffer(struct dirty_log *log)
{
	struct dl_disk_header h = {
		.magic = DL_DISK_MAGIC,
		.version = DL_DISK_VERSION,
		.nr_regions = log->region_count,
	};

	memset(log->buf, 0, log->buf_size);
	dl_disk_put_header(log->buf, &h);
	dl_disk_put_words(log->buf, log->clean, 0, log->nwords);
}

/* dm-log's disk_resume, with cmirrord's answer for a log that failed. Lock
 * held, no writer at work. */
static int disk_resume(struct dirty_log *log)
{
	struct dl_disk_header h = { 0 };
	uint64_t nr = 0, keep, w;
	bool fresh_clean;
	int r = 0, rw;

	if (log->failed) {
		/* cmirrord: what the disk holds after a failed write is not
		 * to be trusted; a new log it is. */
		log_warn("dirty log %s: the log %s failed before: its bits are not read", log->name,
			 log->path);
	} else {
		ssize_t got = dl_disk_read(log->name, log->path, log->fd, log->buf, log->buf_size);

		if (got < 0) {
			/* dm-log: every region is then as in a new log, lest an
			 * unread region pass for in sync. */
			log->failed = true;
			r = -EIO;
		} else if ((size_t)got < log->buf_size) {
			log_info("dirty log %s: the log %s is short (%zd bytes): a new log", log->name,
				 log->path, got);
		} else {
			dl_disk_get_header(log->buf, &h);
			if ((log->sync != DIRTY_LOG_SYNC_DEFAULT && !log->known) || h.magic != DL_DISK_MAGIC) {
				/* A new log: a sync or nosync table asks for
				 * one, and a restart (known) keeps what is there. */
				h.nr_regions = 0;
			} else {
				/* dm-log reads version 1 as 2 on little endian:
				 * the two differ only in the byte order. */
				if (h.version == 1)
					h.version = DL_DISK_VERSION;
				if (h.version != DL_DISK_VERSION) {
					log_error("dirty log %s: incompatible disk log version %" PRIu32
						  " on %s", log->name, h.version, log->path);
					restore_buffer(log);
					return -EINVAL;
				}
			}
			nr = h.nr_regions;
		}
	}

	/* The bits on disk for the regions both know; regions the header
	 * does not count (the device grew) are clean with nosync, unless
	 * this is a restart, whose regions beyond the log are unknown. */
	keep = nr < log->region_count ? nr : log->region_count;
	fresh_clean = log->sync == DIRTY_LOG_NOSYNC && !log->known;
	bits_fill(log, log->clean, false);
	if (keep)
		dl_disk_get_words(log->buf, log->clean, 0, (size_t)((keep + 63) / 64));
	bits_fill_range(log->clean, keep, log->nwords * 64, false);
	bits_fill_range(log->clean, keep, log->region_count, fresh_clean);

	memcpy(log->in_sync, log->clean, log->nwords * sizeof(uint64_t));
	log->clean_count = bits_count(log->clean, log->nwords);
	log->sync_count = log->clean_count;

	/* The whole buffer, with the header for this many regions. */
	restore_buffer(log);
	memset(log->pages_changed, 0, (log->npages + 63) / 64 * sizeof(uint64_t));
	log->dirtied = false;
	log->sync_wanted = false;

	rw = dl_disk_write(log->name, log->path, log->fd, log->buf, 0, log->buf_size);
	if (rw == 0)
		log->writes++;
	if (rw == 0 && (rw = dl_disk_sync(log->name, log->path, log->fd)) == 0)
		log->flushes++;
	if (rw == 0) {
		for (w = 0; w < log->nwords; w++)
			log->durable[w] = ~log->clean[w] & word_mask(log, w);
	} else {
		log->failed = true;
		memset(log->durable, 0, log->nwords * sizeof(uint64_t));
		bits_fill_range(log->pages_changed, 0, log->npages, true);
		log->dirtied = true;
		r = -EIO;
	}
	return r;
}

/* ---- create, destroy ---- */

static int check_config(const struct dirty_log_config *cfg, const char *name, enum dl_kind *kind)
{
	unsigned k;

	if (!cfg->type) {
		log_error("dirty log %s: no log type", name);
		return -EINVAL;
	}
	for (k = 0; k < sizeof(kind_names) / sizeof(kind_names[0]); k++)
		if (!strcmp(cfg->type, kind_names[k]))
			break;
	if (k == sizeof(kind_names) / sizeof(kind_names[0])) {
		log_error("dirty log %s: unknown log type '%s' (core, disk, clustered-core, clustered-disk)",
			  name, cfg->type);
		return -EINVAL;
	}
	*kind = (enum dl_kind)k;
	if ((k == KIND_DISK || k == KIND_CLUSTERED_DISK) != (cfg->disk_path != NULL)) {
		log_error("dirty log %s: a %s log %s", name, cfg->type,
			  cfg->disk_path ? "takes no log device" : "needs a log device");
		return -EINVAL;
	}
	if (cfg->sync != DIRTY_LOG_SYNC_DEFAULT && cfg->sync != DIRTY_LOG_NOSYNC &&
	    cfg->sync != DIRTY_LOG_FORCESYNC) {
		log_error("dirty log %s: unknown sync mode %d", name, (int)cfg->sync);
		return -EINVAL;
	}
	if (cfg->dev_sectors == 0) {
		log_error("dirty log %s: the device has no sectors", name);
		return -EINVAL;
	}
	/* dm-log's _check_region_size. */
	if (cfg->region_sectors < 2 || (cfg->region_sectors & (cfg->region_sectors - 1)) ||
	    cfg->region_sectors > cfg->dev_sectors) {
		log_error("dirty log %s: invalid region size %" PRIu32 " sectors: a power of two, "
			  "at least 2 and at most the device's %" PRIu64, name, cfg->region_sectors,
			  cfg->dev_sectors);
		return -EINVAL;
	}
	/* dm-log and cmirrord count regions in 32 bits. */
	if ((cfg->dev_sectors - 1) / cfg->region_sectors + 1 > UINT32_MAX) {
		log_error("dirty log %s: more than %" PRIu32 " regions", name, UINT32_MAX);
		return -EINVAL;
	}
	return 0;
}

static void free_log(struct dirty_log *log)
{
	if (log->fd >= 0 && close(log->fd) < 0)
		log_error("dirty log %s: closing the log %s: %s", log->name, log->path, strerror(errno));
	free(log->clean);
	free(log->in_sync);
	free(log->recovering);
	free(log->prio);
	free(log->prio_bits);
	free(log->buf);
	free(log->pages_changed);
	free(log->io_pages);
	free(log->snap);
	free(log->durable);
	free(log->dev);
	free(log->path);
	free(log->name);
	free(log);
}

static int alloc_disk(struct dirty_log *log)
{
	size_t pwords;

	log->buf_size = dl_disk_buffer_size(log->region_count);
	log->npages = log->buf_size / DL_DISK_PAGE;
	pwords = (log->npages + 63) / 64;
	log->buf = io_alloc_aligned(log->buf_size);
	log->pages_changed = calloc(pwords, sizeof(uint64_t));
	log->io_pages = calloc(pwords, sizeof(uint64_t));
	log->snap = calloc(log->nwords, sizeof(uint64_t));
	log->durable = calloc(log->nwords, sizeof(uint64_t));
	if (!log->buf || !log->pages_changed || !log->io_pages || !log->snap || !log->durable)
		return -ENOMEM;
	memset(log->buf, 0, log->buf_size);
	return 0;
}

int dirty_log_create(struct dirty_log **out, const struct dirty_log_config *cfg)
{
	const char *name = cfg && cfg->name ? cfg->name : "(unnamed)";
	struct dirty_log *log;
	enum dl_kind kind;
	struct stat st;
	int r;

	if (!out || !cfg) {
		log_error("dirty log: create without a config");
		return -EINVAL;
	}
	*out = NULL;
	if ((r = check_config(cfg, name, &kind)) < 0)
		return r;

	log = calloc(1, sizeof(*log));
	if (!log) {
		log_error("dirty log %s: out of memory", name);
		return -ENOMEM;
	}
	log->fd = -1;
	log->kind = kind;
	log->disk = kind == KIND_DISK || kind == KIND_CLUSTERED_DISK;
	log->sync = cfg->sync;
	log->block_on_error = cfg->block_on_error;
	log->known = cfg->known;
	log->region_sectors = cfg->region_sectors;
	log->region_count = (cfg->dev_sectors - 1) / cfg->region_sectors + 1;
	log->nwords = (size_t)((log->region_count + 63) / 64);
	log->state = DIRTY_LOG_CONSTRUCTED;
	log->name = strdup(name);
	log->clean = calloc(log->nwords, sizeof(uint64_t));
	log->in_sync = calloc(log->nwords, sizeof(uint64_t));
	log->recovering = calloc(log->nwords, sizeof(uint64_t));
	log->prio_bits = calloc(log->nwords, sizeof(uint64_t));
	r = !log->name || !log->clean || !log->in_sync || !log->recovering || !log->prio_bits
		    ? -ENOMEM : 0;
	if (r == 0 && log->disk) {
		log->path = strdup(cfg->disk_path);
		r = log->path ? alloc_disk(log) : -ENOMEM;
	}
	if (r < 0) {
		log_error("dirty log %s: out of memory for %" PRIu64 " regions", name, log->region_count);
		goto fail;
	}
	if (log->disk) {
		if ((r = dl_disk_open(name, log->path, log->buf_size, &log->fd, &st)) < 0)
			goto fail;
		if (S_ISBLK(st.st_mode)) {
			char dev[32];

			snprintf(dev, sizeof(dev), "%u:%u", major(st.st_rdev), minor(st.st_rdev));
			log->dev = strdup(dev);
		} else {
			log->dev = strdup(log->path);
		}
		if (!log->dev) {
			log_error("dirty log %s: out of memory", name);
			r = -ENOMEM;
			goto fail;
		}
	}

	/* dm-log's create_log_context: every region clean (nothing is
	 * being written), in sync only with nosync. A core log keeps these
	 * bits through its resumes (core_resume only restarts the search);
	 * a disk log replaces them with the disk's at resume. A core log made
	 * again after a restart (known) lost its bits: every region is dirty
	 * and is resynced. */
	bits_fill(log, log->clean, !log->known);
	bits_fill(log, log->in_sync, log->sync == DIRTY_LOG_NOSYNC && !log->known);
	log->clean_count = bits_count(log->clean, log->nwords);
	log->sync_count = bits_count(log->in_sync, log->nwords);

	pthread_mutex_init(&log->lock, NULL);
	pthread_cond_init(&log->cond, NULL);
	*out = log;
	return 0;
fail:
	free_log(log);
	return r;
}

void dirty_log_destroy(struct dirty_log *log)
{
	if (!log)
		return;
	pthread_mutex_lock(&log->lock);
	/* A log never resumed has nothing of its own on disk to write. */
	if (log->disk && log->state != DIRTY_LOG_CONSTRUCTED && flush_locked(log, false) < 0)
		log_error("dirty log %s: the last flush failed", log->name);
	pthread_mutex_unlock(&log->lock);
	pthread_cond_destroy(&log->cond);
	pthread_mutex_destroy(&log->lock);
	free_log(log);
}

/* ---- the state machine ---- */

int dirty_log_resume(struct dirty_log *log)
{
	int r = 0;

	pthread_mutex_lock(&log->lock);
	if (log->state == DIRTY_LOG_RESUMED) {
		/* cmirrord: a resume without a suspend changes nothing. */
		pthread_mutex_unlock(&log->lock);
		return 0;
	}
	wait_idle(log);
	if (log->disk) {
		r = disk_resume(log);
		if (r == -EINVAL) {
			/* A log this code does not understand stays as it is:
			 * neither read nor overwritten, the log not resumed. */
			pthread_mutex_unlock(&log->lock);
			return r;
		}
	}
	log->sync_search = 0;
	log->recovery_halted = false;
	log->state = DIRTY_LOG_RESUMED;
	pthread_mutex_unlock(&log->lock);
	return r;
}

int dirty_log_presuspend(struct dirty_log *log)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_resumed(log, "presuspend");
	if (r == 0)
		log->recovery_halted = true;
	pthread_mutex_unlock(&log->lock);
	return r;
}

int dirty_log_postsuspend(struct dirty_log *log)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_resumed(log, "postsuspend");
	if (r < 0)
		goto out;
	/* Suspended first: no mark slips in behind the flush. */
	log->state = DIRTY_LOG_SUSPENDED;
	if (log->disk)
		r = flush_locked(log, false);
	memset(log->recovering, 0, log->nwords * sizeof(uint64_t));
	memset(log->prio_bits, 0, log->nwords * sizeof(uint64_t));
	log->prio_n = 0;
out:
	pthread_mutex_unlock(&log->lock);
	return r;
}

uint32_t dirty_log_region_sectors(const struct dirty_log *log)
{
	return log->region_sectors;
}

uint64_t dirty_log_region_count(const struct dirty_log *log)
{
	return log->region_count;
}

/* ---- the bits ---- */

static int test_one(struct dirty_log *log, uint64_t region, const uint64_t *bits, const char *what)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_resumed(log, what);
	if (r == 0)
		r = check_region(log, region, what);
	if (r == 0)
		r = bit_test(bits, region);
	pthread_mutex_unlock(&log->lock);
	return r;
}

int dirty_log_is_clean(struct dirty_log *log, uint64_t region)
{
	return test_one(log, region, log->clean, "is_clean");
}

int dirty_log_in_sync(struct dirty_log *log, uint64_t region)
{
	return test_one(log, region, log->in_sync, "in_sync");
}

int dirty_log_mark(struct dirty_log *log, const uint64_t *regions, size_t n)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_regions(log, regions, n, "mark");
	if (r == 0)
		for (size_t i = 0; i < n; i++)
			mark_one(log, regions[i]);
	pthread_mutex_unlock(&log->lock);
	return r;
}

int dirty_log_clear(struct dirty_log *log, const uint64_t *regions, size_t n)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_regions(log, regions, n, "clear");
	for (size_t i = 0; r == 0 && i < n; i++) {
		uint64_t g = regions[i];

		/* cmirrord: a region not in sync stays dirty, so that a
		 * crash before its resync still resyncs it. */
		if (!bit_test(log->in_sync, g) || bit_test(log->clean, g))
			continue;
		bit_set(log->clean, g);
		log->clean_count++;
		page_changed(log, g);
	}
	pthread_mutex_unlock(&log->lock);
	return r;
}

int dirty_log_flush(struct dirty_log *log)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_resumed(log, "flush");
	if (r == 0 && log->disk)
		r = flush_locked(log, false);
	pthread_mutex_unlock(&log->lock);
	return r;
}

int dirty_log_mark_flush(struct dirty_log *log, const uint64_t *regions, size_t n)
{
	bool durable = true;
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_regions(log, regions, n, "mark_flush");
	if (r < 0)
		goto out;
	if (log->disk)
		for (size_t i = 0; i < n && durable; i++)
			durable = bit_test(log->durable, regions[i]);
	for (size_t i = 0; i < n; i++)
		mark_one(log, regions[i]);
	/* The fast path: the disk already says dirty for every one. */
	if (log->disk && !durable)
		r = flush_locked(log, true);
out:
	pthread_mutex_unlock(&log->lock);
	return r;
}

/* ---- resync ---- */

int dirty_log_get_resync_work(struct dirty_log *log, uint64_t *region)
{
	uint64_t g;
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_resumed(log, "get_resync_work");
	/* Presuspended: no more work is handed out. */
	if (r < 0 || log->recovery_halted)
		goto out;

	/* cmirrord: the regions someone waits for come first. */
	while (log->prio_n) {
		g = log->prio[--log->prio_n];
		bit_clear(log->prio_bits, g);
		if (!bit_test(log->in_sync, g) && !bit_test(log->recovering, g))
			goto found;
	}
	/* dm-log's core_get_resync_work: on from the last region handed out,
	 * past the ones already recovering. */
	if (log->sync_search >= log->region_count)
		goto out;
	do {
		g = bits_next_zero(log, log->in_sync, log->sync_search);
		log->sync_search = g + 1;
		if (g >= log->region_count)
			goto out;
	} while (bit_test(log->recovering, g));
found:
	bit_set(log->recovering, g);
	*region = g;
	r = 1;
out:
	pthread_mutex_unlock(&log->lock);
	return r;
}

int dirty_log_set_region_sync(struct dirty_log *log, uint64_t region, bool in_sync)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_resumed(log, "set_region_sync");
	if (r == 0)
		r = check_region(log, region, "set_region_sync");
	if (r < 0)
		goto out;
	bit_clear(log->recovering, region);
	if (in_sync && !bit_test(log->in_sync, region)) {
		bit_set(log->in_sync, region);
		log->sync_count++;
	} else if (!in_sync && bit_test(log->in_sync, region)) {
		bit_clear(log->in_sync, region);
		log->sync_count--;
	}
out:
	pthread_mutex_unlock(&log->lock);
	return r;
}

uint64_t dirty_log_sync_count(struct dirty_log *log)
{
	uint64_t n;

	pthread_mutex_lock(&log->lock);
	n = log->sync_count;
	pthread_mutex_unlock(&log->lock);
	return n;
}

/* Put REGION on the priority list; a full list or no memory only means it
 * is not put first (cmirrord). */
static void prio_push(struct dirty_log *log, uint64_t region)
{
	if (bit_test(log->prio_bits, region) || log->prio_n >= log->region_count)
		return;
	if (log->prio_n == log->prio_cap) {
		size_t cap = log->prio_cap ? log->prio_cap * 2 : 16;
		uint64_t *p;

		if (cap > log->region_count)
			cap = (size_t)log->region_count;
		p = realloc(log->prio, cap * sizeof(*p));
		if (!p)
			return;
		log->prio = p;
		log->prio_cap = cap;
	}
	log->prio[log->prio_n++] = region;
	bit_set(log->prio_bits, region);
}

int dirty_log_is_remote_recovering(struct dirty_log *log, uint64_t region, bool *recovering,
				   uint64_t *hint)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_resumed(log, "is_remote_recovering");
	if (r == 0)
		r = check_region(log, region, "is_remote_recovering");
	if (r < 0)
		goto out;
	if (log->recovery_halted) {
		*recovering = false;
		*hint = log->region_count;	/* none is recovering */
		goto out;
	}
	*recovering = !bit_test(log->in_sync, region);
	/* sync_search is one past the region last handed out. */
	*hint = log->sync_search ? log->sync_search - 1 : 0;
	if (*recovering && !bit_test(log->recovering, region))
		prio_push(log, region);
out:
	pthread_mutex_unlock(&log->lock);
	return r;
}

/* ---- status ---- */

static int emit(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int emit(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!buf || !len)
		return -ENOSPC;
	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len) {
		buf[0] = '\0';
		return -ENOSPC;
	}
	return n;
}

/* INFO: dm-log's core_status and disk_status (the disk's state: A alive,
 * D failed), cmirrord's core_status_info and disk_status_info. */
int dirty_log_status_info(struct dirty_log *log, char *buf, size_t len)
{
	char state;

	pthread_mutex_lock(&log->lock);
	state = log->failed ? 'D' : 'A';
	pthread_mutex_unlock(&log->lock);
	if (!log->disk)
		return emit(buf, len, "1 %s", kind_names[log->kind]);
	return emit(buf, len, "3 %s %s %c", kind_names[log->kind], log->dev, state);
}

/* TABLE: dm-log's (an argument count, the sync word only when not the
 * default), or cmirrord's for the clustered types (no count, and
 * block_on_error; its format leaves two spaces before the end when neither
 * word is there, kept as it is). */
int dirty_log_status_table(struct dirty_log *log, char *buf, size_t len)
{
	const char *sync = log->sync == DIRTY_LOG_SYNC_DEFAULT ? ""
			   : log->sync == DIRTY_LOG_NOSYNC ? "nosync " : "sync ";
	bool def = log->sync == DIRTY_LOG_SYNC_DEFAULT;

	switch (log->kind) {
	case KIND_CORE:
		return emit(buf, len, "core %u %" PRIu32 " %s", def ? 1 : 2, log->region_sectors, sync);
	case KIND_DISK:
		return emit(buf, len, "disk %u %s %" PRIu32 " %s", def ? 2 : 3, log->dev,
			    log->region_sectors, sync);
	case KIND_CLUSTERED_CORE:
		return emit(buf, len, "clustered-core %" PRIu32 " %s%s ", log->region_sectors, sync,
			    log->block_on_error ? "block_on_error" : "");
	case KIND_CLUSTERED_DISK:
		return emit(buf, len, "clustered-disk %s %" PRIu32 " %s%s ", log->dev,
			    log->region_sectors, sync, log->block_on_error ? "block_on_error" : "");
	}
	return -EINVAL;
}

bool dirty_log_next_dirty(struct dirty_log *log, uint64_t *region)
{
	uint64_t g;

	pthread_mutex_lock(&log->lock);
	g = *region < log->region_count ? bits_next_zero(log, log->clean, *region) : log->region_count;
	pthread_mutex_unlock(&log->lock);
	if (g >= log->region_count)
		return false;
	*region = g;
	return true;
}

int dirty_log_clear_all(struct dirty_log *log)
{
	int r;

	pthread_mutex_lock(&log->lock);
	r = check_resumed(log, "clear_all");
	for (size_t w = 0; r == 0 && w < log->nwords; w++) {
		uint64_t m = word_mask(log, w);

		if (log->clean[w] != m && log->disk)
			bit_set(log->pages_changed, dl_disk_word_page(w));
		log->clean[w] = m;
		log->in_sync[w] = m;
	}
	if (r == 0) {
		log->clean_count = log->region_count;
		log->sync_count = log->region_count;
	}
	pthread_mutex_unlock(&log->lock);
	return r;
}

int dirty_log_probe(const char *path, uint64_t *nr_regions, char *reason, size_t reason_len)
{
	unsigned char buf[DL_DISK_HEADER_BYTES];
	struct dl_disk_header h;
	ssize_t got;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0) {
		r = -errno;
		snprintf(reason, reason_len, "%s", strerror(errno));
		return r;
	}
	got = io_pread_all(fd, buf, sizeof(buf), 0);
	close(fd);
	if (got < 0) {
		snprintf(reason, reason_len, "%s", strerror((int)-got));
		return (int)got;
	}
	if ((size_t)got < sizeof(buf)) {
		snprintf(reason, reason_len, "shorter than a header");
		return -EINVAL;
	}
	dl_disk_get_header(buf, &h);
	if (h.magic != DL_DISK_MAGIC || (h.version != DL_DISK_VERSION && h.version != 1)) {
		snprintf(reason, reason_len, "not a dirty log (magic %#x, version %u)", h.magic, h.version);
		return -EINVAL;
	}
	*nr_regions = h.nr_regions;
	return 0;
}

void dirty_log_get_stats(struct dirty_log *log, struct dirty_log_stats *st)
{
	pthread_mutex_lock(&log->lock);
	st->state = log->state;
	st->region_count = log->region_count;
	st->region_sectors = log->region_sectors;
	st->sync_count = log->sync_count;
	st->dirty_count = log->region_count - log->clean_count;
	st->writes = log->writes;
	st->flushes = log->flushes;
	st->failed = log->failed;
	pthread_mutex_unlock(&log->lock);
}
