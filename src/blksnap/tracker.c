/* tracker: change-block tracking of every write, discard and write-zeroes,
 * before it reaches the layers below. Reads are not tracked. With a state
 * directory it decides when the map's file (cbt_store) is loaded, marked in
 * use, saved CLEAN and removed. */
#include "blksnap/tracker.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/lock_order.h"
#include "common/log.h"
#include "core/device.h"
#include "core/filter.h"
#include "core/io.h"
#include "blksnap/blksnap.h"
#include "blksnap/cbt_map.h"
#include "blksnap/cbt_store.h"
#include "blksnap/diff_area.h"

struct tracker {
	struct blksnap *bs;
	struct cbt_map *cbt;
	struct diff_area *da; /* while a snapshot is taken; changed only drained */
	char *state_path; /* DIR/NAME.cbt with --state-dir, else NULL */
};

/* The map saved in T's state file if it passes every check, else a new one
 * (new generation), saying why once. Then the file is rewritten without
 * CLEAN before any write can be served (the device is drained while we
 * attach): a crash from now on can never reuse it. */
static int load_state(struct tracker *t, struct device *dev)
{
	const char *name = device_name(dev);
	uint64_t capacity = device_size(dev);
	/* A map saved at a clean stop describes the store as it was then: a
	 * write served before this attach (the device was opened without a
	 * tracker, or it was detached) is not in it. */
	bool written = device_written(dev);
	char gen[37];
	int v = CBT_STORE_MISSING, r;

	if (!written) {
		v = cbt_store_load(t->state_path, capacity, &t->bs->params, &t->cbt);
		if (v < 0)
			return v;
	}
	if (v == CBT_STORE_OK) {
		uuid_unparse_lower(t->cbt->generation_id, gen);
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
		else
			log_warn("%s: CBT in %s not used (%s): new generation %s", name, t->state_path,
				 cbt_store_verdict_str(v), gen);
	}
	r = cbt_store_save(t->state_path, t->cbt, false); /* logs why it failed */
	if (r < 0) {
		cbt_map_destroy(t->cbt);
		t->cbt = NULL;
	}
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
		r = t->state_path ? load_state(t, f->dev) : -ENOMEM;
	} else {
		r = cbt_map_create(&t->cbt, device_size(f->dev), &bs->params);
	}
	if (r < 0) {
		free(t->state_path);
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
	if (t->state_path) {
		if (atomic_load(&t->bs->stopping)) {
			char gen[37];

			uuid_unparse_lower(t->cbt->generation_id, gen);
			if (cbt_store_save(t->state_path, t->cbt, true) == 0)
				log_info("%s: CBT saved to %s, generation %s, changes_number %u",
					 device_name(f->dev), t->state_path, gen, t->cbt->snap_number_previous);
			else
				log_error("%s: CBT not saved cleanly: the next start issues a new generation",
					  device_name(f->dev));
		} else {
			cbt_store_remove(t->state_path);
		}
	}
	cbt_map_destroy(t->cbt);
	free(t->state_path);
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
	for (size_t i = 0; i < dq->n; i++)
		cbt_map_mark_both(t->cbt, dq->r[i].offset * BDF_SECTOR_SIZE, dq->r[i].count * BDF_SECTOR_SIZE);
	return 0;
}

int tracker_mark_dirty(struct device *dev, const struct sector_range *r, size_t n)
{
	struct dirty_req dq = { .r = r, .n = n };

	return tracker_with(dev, mark_dirty, &dq);
}
