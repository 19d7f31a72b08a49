/* tracker: change-block tracking of every write, discard and write-zeroes,
 * before it reaches the layers below. Reads are not tracked. With a state
 * directory it decides when the map's file (cbt_store) is loaded,
 * checkpointed, saved CLEAN and removed, and keeps the write-intent log
 * beside it (a disk dirty log, DIR/NAME.wil): before the first write to a
 * region since the last checkpoint reaches the store, the region is marked
 * and the mark is durable, so that after a crash the last checkpoint plus
 * the log's dirty regions over-report the writes, never under-report them.
 * A checkpoint is taken at attach and at every snapshot take (the take moves
 * the snapshot numbers on: a crash must not bring back the old ones); after
 * it, every region is cleared, lazily. */
#include "blksnap/tracker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdio.h>

#include "common/lock_order.h"
#include "common/log.h"
#include "core/device.h"
#include "core/filter.h"
#include "core/io.h"
#include "blksnap/blksnap.h"
#include "blksnap/cbt_map.h"
#include "blksnap/cbt_store.h"
#include "blksnap/diff_area.h"
#include "dirtylog/dirty_log.h"

struct tracker {
	struct blksnap *bs;
	struct cbt_map *cbt;
	struct diff_area *da; /* while a snapshot is taken; changed only drained */
	char *state_path; /* DIR/NAME.cbt with --state-dir, else NULL */
	char *wil_path; /* DIR/NAME.wil */
	struct dirty_log *wil; /* the write-intent log, or NULL (none, or given up) */
	unsigned wil_shift; /* log2 of its region size in bytes */
	atomic_bool wil_failed; /* a mark failed: the log is given up */
	/* Regions known durably dirty since the last checkpoint: the writers'
	 * fast path, a load and no lock. Set after the log said so; zeroed
	 * at a checkpoint, with the device drained. */
	_Atomic uint64_t *wil_known;
	size_t wil_known_words;
};

/* Regions of at least 4 MiB and of a CBT block, at most 2^24 of them: the
 * first write to a region waits for a flush, and a crash over-reports a
 * whole region, so neither too small nor too many. */
#define WIL_MIN_SHIFT 22
#define WIL_MAX_REGIONS (1ull << 24)
#define WIL_BATCH 64

static unsigned wil_geometry(uint64_t capacity, unsigned blk_shift)
{
	unsigned shift = blk_shift > WIL_MIN_SHIFT ? blk_shift : WIL_MIN_SHIFT;

	while (shift < 62 && (capacity >> shift) >= WIL_MAX_REGIONS)
		shift++;
	return shift;
}

/* The log gave an error: from now on a crash must issue a new generation,
 * so the file goes (a missing log is what the next start checks for). */
static void wil_give_up(struct tracker *t, const char *name, const char *why)
{
	if (atomic_exchange(&t->wil_failed, true))
		return;
	log_error("%s: the write-intent log %s failed (%s): a crash from now on issues a new CBT generation",
		  name, t->wil_path, why);
	if (unlink(t->wil_path) < 0 && errno != ENOENT)
		log_error("%s: cannot remove %s either: %s", name, t->wil_path, strerror(errno));
}

/* Open (RECOVER: read the dirty regions it holds) or make the log. */
static int wil_open(struct tracker *t, struct device *dev, bool recover)
{
	uint64_t capacity = device_size(dev), sectors = (capacity + BDF_SECTOR_SIZE - 1) / BDF_SECTOR_SIZE;
	struct dirty_log_config cfg = {
		.name = device_name(dev), .type = "disk", .dev_sectors = sectors,
		.sync = DIRTY_LOG_NOSYNC, .disk_path = t->wil_path, .known = recover,
	};
	int r;

	t->wil_shift = wil_geometry(capacity, t->cbt->blk_size_shift);
	while (t->wil_shift > 10 && (1ull << (t->wil_shift - 9)) > sectors)
		t->wil_shift--; /* a device smaller than a region */
	if (sectors < 2) {
		log_info("%s: too small for a write-intent log: a crash issues a new CBT generation",
			 device_name(dev));
		atomic_store(&t->wil_failed, true);
		return 0;
	}
	cfg.region_sectors = (uint32_t)(1ull << (t->wil_shift - 9));
	if (!recover) { /* the dirty log opens a log device; ours is a file we make */
		int fd = open(t->wil_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

		if (fd < 0) {
			r = -errno;
			log_error("%s: cannot make the write-intent log %s: %s", device_name(dev), t->wil_path,
				  strerror(errno));
			return r;
		}
		close(fd);
	}
	r = dirty_log_create(&t->wil, &cfg);
	if (r == 0 && (r = dirty_log_resume(t->wil)) < 0) {
		dirty_log_destroy(t->wil);
		t->wil = NULL;
	}
	if (r == 0) {
		t->wil_known_words = (size_t)((dirty_log_region_count(t->wil) + 63) / 64);
		t->wil_known = calloc(t->wil_known_words, sizeof(*t->wil_known));
		if (!t->wil_known) {
			dirty_log_destroy(t->wil);
			t->wil = NULL;
			r = -ENOMEM;
		}
	}
	return r;
}

static bool wil_known_dirty(struct tracker *t, uint64_t g)
{
	return atomic_load_explicit(&t->wil_known[g / 64], memory_order_acquire) & (1ull << (g % 64));
}

/* Before a change of [OFFSET, OFFSET + COUNT) reaches the store: its regions
 * are durably dirty when this returns (at once if they are already). */
static void wil_mark(struct tracker *t, struct device *dev, uint64_t offset, uint64_t count)
{
	uint64_t regions[WIL_BATCH], first, last;
	size_t n = 0;

	if (!t->wil || atomic_load_explicit(&t->wil_failed, memory_order_relaxed) || !count)
		return;
	first = offset >> t->wil_shift;
	last = (offset + count - 1) >> t->wil_shift;
	if (last >= dirty_log_region_count(t->wil))
		last = dirty_log_region_count(t->wil) - 1;
	for (uint64_t g = first; g <= last; g++) {
		if (!wil_known_dirty(t, g))
			regions[n++] = g;
		if (n && (n == WIL_BATCH || g == last)) {
			int r = dirty_log_mark_flush(t->wil, regions, n);

			if (r < 0) {
				wil_give_up(t, device_name(dev), strerror(-r));
				return;
			}
			for (size_t i = 0; i < n; i++)
				atomic_fetch_or_explicit(&t->wil_known[regions[i] / 64], 1ull << (regions[i] % 64),
							 memory_order_release);
			n = 0;
		}
	}
}

/* The map as it is now, durably (not CLEAN, LOGGED): every mark so far is
 * in it, so the log's regions can all be cleared. */
static int wil_checkpoint(struct tracker *t, struct device *dev)
{
	int r;

	if (!t->wil || atomic_load(&t->wil_failed))
		return cbt_store_save(t->state_path, t->cbt, 0);
	r = cbt_store_save(t->state_path, t->cbt, CBT_STORE_FLAG_LOGGED);
	if (r < 0) {
		wil_give_up(t, device_name(dev), "the checkpoint could not be saved");
		return r;
	}
	dirty_log_clear_all(t->wil);
	for (size_t w = 0; w < t->wil_known_words; w++)
		atomic_store_explicit(&t->wil_known[w], 0, memory_order_relaxed);
	return 0;
}

/* After a crash: every region the log holds dirty, marked in the write map
 * with the active number (the checkpoint is at or after the last take). */
static uint64_t wil_replay(struct tracker *t)
{
	uint64_t g = 0, n = 0, cap = t->cbt->device_capacity;

	for (; dirty_log_next_dirty(t->wil, &g); g++, n++) {
		uint64_t off = g << t->wil_shift, len = 1ull << t->wil_shift;

		if (off >= cap)
			break;
		if (len > cap - off)
			len = cap - off;
		cbt_map_mark(t->cbt, off, len);
	}
	return n;
}

/* The map saved in T's state file if it passes every check (a checkpoint
 * only with its write-intent log), else a new one (new generation), saying
 * why once. Then a checkpoint is saved before any write can be served (the
 * device is drained while we attach): from now on a crash finds it and the
 * log, never a file that says CLEAN. */
static int load_state(struct tracker *t, struct device *dev)
{
	const char *name = device_name(dev);
	uint64_t capacity = device_size(dev);
	/* A map saved at a clean stop describes the store as it was then: a
	 * write served before this attach (the device was opened without a
	 * tracker, or it was detached) is not in it. */
	bool written = device_written(dev), recover = false;
	char gen[37], why[160] = "";
	int v = CBT_STORE_MISSING, r;

	if (!written) {
		v = cbt_store_load(t->state_path, capacity, &t->bs->params, &t->cbt);
		if (v < 0)
			return v;
	}
	if (v == CBT_STORE_CHECKPOINT) {
		uint64_t nr = 0, want;
		char reason[96];

		t->wil_shift = wil_geometry(capacity, t->cbt->blk_size_shift);
		r = dirty_log_probe(t->wil_path, &nr, reason, sizeof(reason));
		want = (capacity + (1ull << t->wil_shift) - 1) >> t->wil_shift;
		if (r < 0)
			snprintf(why, sizeof(why), "the write-intent log %s: %s", t->wil_path,
				 r == -ENOENT ? "missing" : reason);
		else if (nr != want)
			snprintf(why, sizeof(why), "the write-intent log %s has %llu regions, not %llu",
				 t->wil_path, (unsigned long long)nr, (unsigned long long)want);
		if (*why) {
			cbt_map_destroy(t->cbt);
			t->cbt = NULL;
		} else {
			recover = true;
		}
	}
	if (v == CBT_STORE_OK || recover) {
		uuid_unparse_lower(t->cbt->generation_id, gen);
		if (!recover)
			log_info("%s: CBT loaded from %s, generation %s, changes_number %u", name, t->state_path, gen,
				 t->cbt->snap_number_previous);
	} else {
		r = cbt_map_create(&t->cbt, capacity, &t->bs->params);
		if (r < 0)
			return r;
		uuid_unparse_lower(t->cbt->generation_id, gen);
		if (written)
			log_info("%s: the device was written before the tracker was attached: "
				 "new generation %s (not loaded from %s)", name, gen, t->state_path);
		else if (v == CBT_STORE_MISSING)
			log_info("%s: no saved CBT in %s: new generation %s", name, t->state_path, gen);
		else if (v == CBT_STORE_CAPACITY)
			log_warn("%s: CBT in %s not used (%s, now %llu bytes): new generation %s", name,
				 t->state_path, cbt_store_verdict_str(v), (unsigned long long)capacity, gen);
		else if (*why)
			log_warn("%s: CBT in %s not used after an unclean stop (%s): new generation %s", name,
				 t->state_path, why, gen);
		else
			log_warn("%s: CBT in %s not used (%s): new generation %s", name, t->state_path,
				 cbt_store_verdict_str(v), gen);
	}
	/* The log: read back after a crash, else made anew (all clean). */
	r = wil_open(t, dev, recover);
	if (r < 0 && recover) {
		log_warn("%s: the write-intent log %s cannot be read: new generation", name, t->wil_path);
		cbt_map_destroy(t->cbt);
		t->cbt = NULL;
		r = cbt_map_create(&t->cbt, capacity, &t->bs->params);
		if (r == 0)
			r = wil_open(t, dev, false);
		recover = false;
	}
	if (r < 0)
		goto fail;
	if (recover) {
		uint64_t n = wil_replay(t);

		log_info("%s: CBT recovered after an unclean stop from the checkpoint in %s and %llu dirty "
			 "regions of %s: generation %s, changes_number %u", name, t->state_path,
			 (unsigned long long)n, t->wil_path, gen, t->cbt->snap_number_previous);
	}
	r = wil_checkpoint(t, dev); /* logs why it failed */
	if (r == 0)
		return 0;
fail:
	if (t->wil)
		dirty_log_destroy(t->wil);
	t->wil = NULL;
	free(t->wil_known);
	t->wil_known = NULL;
	cbt_map_destroy(t->cbt);
	t->cbt = NULL;
	return r;
}

static int tr_attach(struct filter *f, void *ctx)
{
	struct blksnap *bs = ctx;
	struct tracker *t;
	int r;

	if (!bs)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->bs = bs;
	if (bs->state_dir) {
		t->state_path = cbt_store_path(bs->state_dir, device_name(f->dev));
		t->wil_path = cbt_store_wil_path(bs->state_dir, device_name(f->dev));
		r = t->state_path && t->wil_path ? load_state(t, f->dev) : -ENOMEM;
	} else {
		r = cbt_map_create(&t->cbt, device_size(f->dev), &bs->params);
	}
	if (r < 0) {
		free(t->state_path);
		free(t->wil_path);
		free(t);
		return r;
	}
	f->priv = t;
	return 0;
}

/* Detached with the device drained, so no write follows: at a clean stop the
 * map is saved CLEAN; otherwise (bdfilter detach, device_remove) it is dropped
 * as in blksnap, and so is its file, since writes from now on go untracked.
 * A snapshot holds its devices' trackers (core refuses to detach them), so a
 * diff area is never here; if one were, detaching would leave its image
 * reading a device no longer copied before writes. */
static int tr_detach(struct filter *f)
{
	struct tracker *t = f->priv;

	if (t->da)
		return -EBUSY;
	if (t->wil)
		dirty_log_destroy(t->wil); /* flushed: the device is drained */
	free(t->wil_known);
	if (t->state_path) {
		if (atomic_load(&t->bs->stopping)) {
			char gen[37];

			uuid_unparse_lower(t->cbt->generation_id, gen);
			if (cbt_store_save(t->state_path, t->cbt, true) == 0)
				log_info("%s: CBT saved to %s, generation %s, changes_number %u",
					 device_name(f->dev), t->state_path, gen, t->cbt->snap_number_previous);
			else
				log_error("%s: CBT not saved cleanly: the next start rebuilds it from the last "
					  "checkpoint and the write-intent log, as after a crash", device_name(f->dev));
		} else {
			cbt_store_remove(t->state_path);
			if (unlink(t->wil_path) < 0 && errno != ENOENT)
				log_warn("%s: cannot remove %s: %s", device_name(f->dev), t->wil_path, strerror(errno));
		}
	}
	cbt_map_destroy(t->cbt);
	free(t->state_path);
	free(t->wil_path);
	free(t);
	f->priv = NULL;
	return 0;
}

/* Before any change reaches the layers below: the CBT is marked (a crash in
 * between over-reports, never under-reports), and with a snapshot taken the
 * chunks it touches are copied to the difference storage. */
static void before_change(struct filter *f, uint64_t count, uint64_t offset)
{
	struct tracker *t = f->priv;

	wil_mark(t, f->dev, offset, count);
	cbt_map_mark(t->cbt, offset, count);
	if (t->da)
		diff_area_cow(t->da, f, offset, count);
}

static int tr_pwrite(struct filter *f, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	before_change(f, count, offset);
	return filter_next_pwrite(f, buf, count, offset, flags);
}

static int tr_trim(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	before_change(f, count, offset);
	return filter_next_trim(f, count, offset, flags);
}

static int tr_zero(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	before_change(f, count, offset);
	return filter_next_zero(f, count, offset, flags);
}

/* blksnap finds a capacity change at the next take and resets the map then; we
 * hear of it first, and say so at once: cbtinfo shows the map corrupted from
 * now on, and the next take resets it for the new size with a new generation.
 * A taken snapshot's image keeps the capacity it had at take, and its chunks
 * cover no more than that: the resize waits for the snapshot to go. */
static int tr_resize(struct filter *f, uint64_t new_size)
{
	struct tracker *t = f->priv;

	if (t->da)
		return -EBUSY;
	if (!__atomic_load_n(&t->cbt->is_corrupted, __ATOMIC_RELAXED))
		log_info("%s: resized to %llu bytes: the CBT map is corrupted until the next snapshot take",
			 device_name(f->dev), (unsigned long long)new_size);
	cbt_map_set_corrupted(t->cbt);
	return 0;
}

int tracker_with(struct device *dev, int (*fn)(struct filter *f, void *opaque), void *opaque)
{
	return device_with_filter(dev, &tracker_filter_ops, fn, opaque);
}

struct filter *tracker_of_quiesced(struct device *dev)
{
	return device_filter_quiesced(dev, &tracker_filter_ops);
}

int tracker_hold(struct device *dev)
{
	return device_filter_hold(dev, &tracker_filter_ops);
}

void tracker_release(struct device *dev)
{
	device_filter_release(dev, &tracker_filter_ops);
}

void tracker_log_change(struct filter *f, uint64_t offset, uint64_t count)
{
	wil_mark(f->priv, f->dev, offset, count);
}

int tracker_checkpoint(struct filter *f)
{
	struct tracker *t = f->priv;

	return t->state_path ? wil_checkpoint(t, f->dev) : 0;
}

struct cbt_map *tracker_cbt(struct filter *f)
{
	return ((struct tracker *)f->priv)->cbt;
}

struct diff_area *tracker_diff_area(struct filter *f)
{
	return ((struct tracker *)f->priv)->da;
}

void tracker_set_diff_area(struct filter *f, struct diff_area *da)
{
	struct tracker *t = f->priv;

	diff_area_put(t->da);
	t->da = da ? diff_area_get(da) : NULL;
}

const struct filter_ops tracker_filter_ops = {
	.name = "tracker",
	.attach = tr_attach,
	.detach = tr_detach,
	.resize = tr_resize,
	.pwrite = tr_pwrite,
	.trim = tr_trim,
	.zero = tr_zero,
};

static int get_info(struct filter *f, void *opaque)
{
	struct tracker *t = f->priv;
	struct cbt_info *info = opaque;
	struct cbt_map *m = t->cbt;

	lock_mutex(&m->lock, LOCK_CBT_MAP);
	info->device_capacity = m->device_capacity;
	info->block_size = 1u << m->blk_size_shift;
	info->block_count = m->blk_count;
	uuid_copy(info->generation_id, m->generation_id);
	info->changes_number = m->snap_number_previous;
	info->corrupted = __atomic_load_n(&m->is_corrupted, __ATOMIC_RELAXED);
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	info->wil = t->wil && !atomic_load(&t->wil_failed);
	if (info->wil) {
		struct dirty_log_stats st;

		dirty_log_get_stats(t->wil, &st);
		info->wil_region_size = 1ull << t->wil_shift;
		info->wil_regions = st.region_count;
		info->wil_dirty = st.dirty_count;
		info->wil_writes = st.writes;
		info->wil_flushes = st.flushes;
	}
	return 0;
}

int tracker_cbtinfo(struct device *dev, struct cbt_info *out)
{
	return tracker_with(dev, get_info, out);
}

struct read_req {
	uint64_t offset, len, got;
	uint8_t *buf;
};

static int read_map(struct filter *f, void *opaque)
{
	struct tracker *t = f->priv;
	struct read_req *rq = opaque;

	if (rq->offset > t->cbt->blk_count)
		return -EINVAL;
	rq->got = cbt_map_read(t->cbt, rq->offset, rq->len, rq->buf);
	return 0;
}

int tracker_read_cbtmap(struct device *dev, uint64_t offset, uint64_t len, uint8_t *buf, uint64_t *got)
{
	struct read_req rq = { .offset = offset, .len = len, .buf = buf };
	int r = tracker_with(dev, read_map, &rq);

	*got = rq.got;
	return r;
}

struct dirty_req {
	const struct sector_range *r;
	size_t n;
};

static int mark_dirty(struct filter *f, void *opaque)
{
	struct tracker *t = f->priv;
	struct dirty_req *dq = opaque;
	uint64_t cap = t->cbt->device_capacity;

	/* After a resize the map may be larger than the device: a range past the
	 * device's end is refused all the same. */
	if (device_size(f->dev) < cap)
		cap = device_size(f->dev);
	cap /= BDF_SECTOR_SIZE;

	/* All or nothing: check every range before marking any. */
	for (size_t i = 0; i < dq->n; i++)
		if (dq->r[i].offset > cap || dq->r[i].count > cap - dq->r[i].offset)
			return -EINVAL;
	for (size_t i = 0; i < dq->n; i++) {
		wil_mark(t, f->dev, dq->r[i].offset * BDF_SECTOR_SIZE, dq->r[i].count * BDF_SECTOR_SIZE);
		cbt_map_mark_both(t->cbt, dq->r[i].offset * BDF_SECTOR_SIZE, dq->r[i].count * BDF_SECTOR_SIZE);
	}
	return 0;
}

int tracker_mark_dirty(struct device *dev, const struct sector_range *r, size_t n)
{
	struct dirty_req dq = { .r = r, .n = n };

	return tracker_with(dev, mark_dirty, &dq);
}

static void saved_state_stale(struct device *dev, void *opaque)
{
	struct blksnap *bs = opaque;
	char *cbt = cbt_store_path(bs->state_dir, device_name(dev));
	char *wil = cbt_store_wil_path(bs->state_dir, device_name(dev));

	if (!cbt || !wil) {
		log_error("%s: out of memory", device_name(dev));
	} else if (access(cbt, F_OK) == 0) {
		/* Removed before the write goes down: a crash after it finds no
		 * map, never one that misses the write. */
		if (cbt_store_remove(cbt) == 0)
			log_warn("%s: written with no tracker attached: its saved CBT map %s no longer describes it "
				 "and is removed (the next tracker starts a new generation)", device_name(dev), cbt);
		if (unlink(wil) < 0 && errno != ENOENT)
			log_warn("%s: cannot remove %s: %s", device_name(dev), wil, strerror(errno));
	}
	free(cbt);
	free(wil);
}

void tracker_guard_saved_state(struct blksnap *bs, struct device *dev)
{
	if (bs->state_dir)
		device_on_first_write(dev, &tracker_filter_ops, saved_state_stale, bs);
}
