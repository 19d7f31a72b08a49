/* tracker: change-block tracking of every write, discard and write-zeroes,
 * before it reaches the layers below. Reads are not tracked. */
#include "filters/tracker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "core/device.h"
#include "core/filter.h"
#include "core/io.h"
#include "filters/blksnap.h"
#include "filters/cbt_map.h"
#include "filters/diff_area.h"

struct tracker {
	struct blksnap *bs;
	struct cbt_map *cbt;
	struct diff_area *da; /* while a snapshot is taken; changed only drained */
};

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
	r = cbt_map_create(&t->cbt, device_size(f->dev), &bs->params);
	if (r < 0) {
		free(t);
		return r;
	}
	f->priv = t;
	return 0;
}

static void tr_detach(struct filter *f)
{
	struct tracker *t = f->priv;

	diff_area_put(t->da); /* the control plane refuses this while in a snapshot */
	cbt_map_destroy(t->cbt);
	free(t);
	f->priv = NULL;
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

	pthread_mutex_lock(&m->lock);
	info->device_capacity = m->device_capacity;
	info->block_size = 1u << m->blk_size_shift;
	info->block_count = m->blk_count;
	uuid_copy(info->generation_id, m->generation_id);
	info->changes_number = m->snap_number_previous;
	info->corrupted = __atomic_load_n(&m->is_corrupted, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int tracker_cbtinfo(struct device *dev, struct cbt_info *out)
{
	return device_with_filter(dev, "tracker", get_info, out);
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
	int r = device_with_filter(dev, "tracker", read_map, &rq);

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

	return device_with_filter(dev, "tracker", mark_dirty, &dq);
}
