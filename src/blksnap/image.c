/* Snapshot images as devices (see image.h). Each request runs with the origin's
 * tracker held against detach (device_with_filter) and checks that the tracker
 * still carries this image's diff area: after snapshot_destroy it does not, and
 * the image's I/O fails with EIO instead of touching freed state. */
#include "blksnap/image.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/backing.h"
#include "core/device.h"
#include "core/io.h"
#include "blksnap/cbt_map.h"
#include "blksnap/diff_area.h"
#include "blksnap/diff_storage.h"
#include "blksnap/tracker.h"

struct image_io {
	struct diff_area *da;
	void *buf;
	const void *cbuf;
	uint64_t count, offset;
	bool write;
	struct extents *e; /* an allocation map instead */
	uint32_t flags;
};

static int image_io_on_tracker(struct filter *f, void *opaque)
{
	struct image_io *io = opaque;

	if (tracker_diff_area(f) != io->da || diff_area_detached(io->da))
		return -EIO;
	if (io->e)
		return diff_area_image_extents(io->da, f, io->count, io->offset, io->flags, io->e);
	if (io->write)
		return diff_area_image_write(io->da, f, tracker_cbt(f), io->cbuf, io->count, io->offset);
	return diff_area_image_read(io->da, f, io->buf, io->count, io->offset);
}

static int image_run(struct image_io *io)
{
	int r = device_with_filter(diff_area_origin(io->da), "tracker", image_io_on_tracker, io);

	return r == -ENOENT ? -EIO : r;
}

static int image_pread(void *priv, void *buf, uint64_t count, uint64_t offset)
{
	struct image_io io = { .da = priv, .buf = buf, .count = count, .offset = offset };

	return image_run(&io);
}

static int image_pwrite(void *priv, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	struct image_io io = { .da = priv, .cbuf = buf, .count = count, .offset = offset, .write = true };
	int r = image_run(&io);

	if (r == 0 && (flags & BDF_FUA))
		r = diff_storage_flush(diff_area_storage(priv));
	return r;
}

static int image_extents(void *priv, uint64_t count, uint64_t offset, uint32_t flags, struct extents *e)
{
	struct image_io io = { .da = priv, .count = count, .offset = offset, .e = e, .flags = flags };

	return image_run(&io);
}

static int image_flush(void *priv)
{
	struct diff_area *da = priv;

	return diff_area_detached(da) ? -EIO : diff_storage_flush(diff_area_storage(da));
}

static int image_zero(void *priv, uint64_t count, uint64_t offset, uint32_t flags)
{
	const uint64_t piece = 1u << 20;
	void *zero = calloc(1, count < piece ? count : piece);
	int r = 0;

	if (!zero)
		return -ENOMEM;
	while (count > 0 && r == 0) {
		uint64_t n = count < piece ? count : piece;

		r = image_pwrite(priv, zero, n, offset, 0);
		count -= n;
		offset += n;
	}
	free(zero);
	if (r == 0 && (flags & BDF_FUA))
		r = image_flush(priv);
	return r;
}

/* The changes: the origin's read map, which the take made the map of this
 * image and which only image writes and markdirtyblock raise while it lives. */
struct image_changes {
	struct diff_area *da;
	struct backing_changes *info;
	uint8_t since;
	uint64_t count, offset;
	struct extents *e;
};

static int image_changes_on_tracker(struct filter *f, void *opaque)
{
	struct image_changes *ic = opaque;
	struct cbt_map *m = tracker_cbt(f);

	if (tracker_diff_area(f) != ic->da || diff_area_detached(ic->da))
		return -EIO;
	if (ic->e)
		return cbt_map_changed(m, ic->since, ic->offset, ic->count, ic->e);
	pthread_mutex_lock(&m->lock);
	uuid_unparse_lower(m->generation_id, ic->info->generation);
	ic->info->number = m->snap_number_previous;
	ic->info->block_size = 1u << m->blk_size_shift;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int image_changes(void *priv, struct backing_changes *out)
{
	struct image_changes ic = { .da = priv, .info = out };
	int r = device_with_filter(diff_area_origin(ic.da), "tracker", image_changes_on_tracker, &ic);

	return r == -ENOENT ? -EIO : r;
}

static int image_changed_extents(void *priv, uint8_t since, uint64_t count, uint64_t offset,
				 struct extents *e)
{
	struct image_changes ic = { .da = priv, .since = since, .count = count, .offset = offset, .e = e };
	int r = device_with_filter(diff_area_origin(ic.da), "tracker", image_changes_on_tracker, &ic);

	return r == -ENOENT ? -EIO : r;
}

static void image_close(void *priv)
{
	diff_area_put(priv);
}

static const struct backing_ops image_ops = {
	.pread = image_pread,
	.pwrite = image_pwrite,
	.flush = image_flush,
	.zero = image_zero,
	.close = image_close,
	.extents = image_extents,
	.changes = image_changes,
	.changed_extents = image_changed_extents,
};

int image_device_new(const char *name, struct diff_area *da, struct device **out)
{
	struct backing *b;
	struct backing_changes ch;
	char desc[400];
	int r;

	/* The description carries what a backup client needs to name the
	 * changes it wants (see nbd_block_status.c). */
	if (image_changes(da, &ch) == 0)
		snprintf(desc, sizeof(desc), "snapshot image of %s generation=%s changes_number=%u",
			 device_name(diff_area_origin(da)), ch.generation, ch.number);
	else
		snprintf(desc, sizeof(desc), "snapshot image of %s", device_name(diff_area_origin(da)));
	r = backing_new_custom(&image_ops, diff_area_get(da), diff_area_capacity(da), desc, &b);
	if (r < 0) {
		diff_area_put(da);
		return r;
	}
	r = device_new(name, b, false, out);
	if (r < 0)
		backing_close(b);
	return r;
}
