/* Snapshot images as devices (see image.h). Each request runs with the origin's
 * tracker held against detach (device_with_filter) and checks that the tracker
 * still carries this image's diff area: after snapshot_destroy it does not, and
 * the image's I/O fails with EIO instead of touching freed state. */
#include "blksnap/image.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lock_order.h"
#include "common/log.h"
#include "core/backing.h"
#include "core/device.h"
#include "core/filter.h"
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
	if (io->write) {
		tracker_log_change(f, io->offset, io->count);
		return diff_area_image_write(io->da, f, tracker_cbt(f), io->cbuf, io->count, io->offset);
	}
	return diff_area_image_read(io->da, f, io->buf, io->count, io->offset);
}

static int image_run(struct image_io *io)
{
	int r = tracker_with(diff_area_origin(io->da), image_io_on_tracker, io);

	return r == -ENOENT ? -EIO : r;
}

static int image_pread(void *priv, void *buf, uint64_t count, uint64_t offset)
{
	struct image_io io = { .da = priv, .buf = buf, .count = count, .offset = offset };

	return image_run(&io);
}

static int image_flush(void *priv);

static int image_pwrite(void *priv, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	struct image_io io = { .da = priv, .cbuf = buf, .count = count, .offset = offset, .write = true };
	int r = image_run(&io);

	if (r == 0 && (flags & BDF_FUA))
		r = image_flush(priv);
	return r;
}

static int image_extents(void *priv, uint64_t count, uint64_t offset, uint32_t flags, struct extents *e)
{
	struct image_io io = { .da = priv, .count = count, .offset = offset, .e = e, .flags = flags };

	return image_run(&io);
}

/* What the image holds goes to stable storage: the copies still queued
 * first. */
static int image_flush(void *priv)
{
	struct diff_area *da = priv;

	if (diff_area_detached(da))
		return -EIO;
	diff_area_drain(da);
	return diff_storage_flush(diff_area_storage(da));
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
 * image and which only image writes and markdirtyblock raise while it lives.
 * They are published as the contexts "qemu:dirty-bitmap:G/N", N below the
 * image's number: the blocks changed after snapshot N of generation G. A map
 * that is corrupted (a reset at take that could not allocate) publishes
 * nothing, and answers nothing: it would under-report. */
#define DIRTY_BITMAP_NS "qemu:dirty-bitmap:"

struct image_changes {
	struct diff_area *da;
	/* listing */
	meta_context_fn fn;
	void *opaque;
	/* extents */
	const char *name;
	uint64_t count, offset;
	struct extents *e;
};

/* SINCE from NAME if NAME is a context of map M, else -ENOENT (M locked). */
static int parse_context(struct cbt_map *m, const char *name, uint8_t *since)
{
	size_t ns = strlen(DIRTY_BITMAP_NS);
	char gen[37], *end;
	unsigned long n;

	if (strncmp(name, DIRTY_BITMAP_NS, ns) != 0)
		return -ENOENT;
	name += ns;
	uuid_unparse_lower(m->generation_id, gen);
	if (strncmp(name, gen, 36) != 0 || name[36] != '/')
		return -ENOENT;
	name += 37;
	if (name[0] < '0' || name[0] > '9' || (name[0] == '0' && name[1] != '\0'))
		return -ENOENT;
	errno = 0;
	n = strtoul(name, &end, 10);
	if (errno || *end || n >= m->snap_number_previous)
		return -ENOENT;
	*since = (uint8_t)n;
	return 0;
}

static int image_changes_on_tracker(struct filter *f, void *opaque)
{
	struct image_changes *ic = opaque;
	struct cbt_map *m = tracker_cbt(f);
	char name[META_CONTEXT_NAME_MAX], desc[160], gen[37];
	uint8_t since, number;
	int r = 0;

	if (tracker_diff_area(f) != ic->da || diff_area_detached(ic->da))
		return ic->fn ? 0 : -EIO;
	if (ic->e) {
		lock_mutex(&m->lock, LOCK_CBT_MAP);
		r = parse_context(m, ic->name, &since);
		if (r == 0 && m->is_corrupted)
			r = -EIO;
		unlock_mutex(&m->lock, LOCK_CBT_MAP);
		return r < 0 ? r : cbt_map_changed(m, since, ic->offset, ic->count, ic->e);
	}
	lock_mutex(&m->lock, LOCK_CBT_MAP);
	uuid_unparse_lower(m->generation_id, gen);
	number = m->is_corrupted ? 0 : m->snap_number_previous;
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	for (unsigned n = 0; n < number && r == 0; n++) {
		snprintf(name, sizeof(name), DIRTY_BITMAP_NS "%s/%u", gen, n);
		snprintf(desc, sizeof(desc), "blocks changed after snapshot %u of generation %s", n, gen);
		r = ic->fn(name, desc, ic->opaque);
	}
	return r;
}

static int image_list_contexts(void *priv, meta_context_fn fn, void *opaque)
{
	struct image_changes ic = { .da = priv, .fn = fn, .opaque = opaque };
	int r = tracker_with(diff_area_origin(ic.da), image_changes_on_tracker, &ic);

	return r == -ENOENT ? 0 : r;
}

static int image_context_extents(void *priv, const char *name, uint64_t count, uint64_t offset,
				 uint32_t flags, struct extents *e)
{
	struct image_changes ic = { .da = priv, .name = name, .count = count, .offset = offset, .e = e };
	int r = tracker_with(diff_area_origin(ic.da), image_changes_on_tracker, &ic);

	return r == -ENOENT ? -EIO : r;
}

/* The image's description: what a backup client needs to name the changes it
 * wants (see bdfilter-backup). None for a corrupted map. */
static int describe_on_tracker(struct filter *f, void *opaque)
{
	char *desc = opaque;
	struct cbt_map *m = tracker_cbt(f);
	char gen[37];

	lock_mutex(&m->lock, LOCK_CBT_MAP);
	uuid_unparse_lower(m->generation_id, gen);
	if (!m->is_corrupted)
		snprintf(desc, 400, "snapshot image of %s generation=%s changes_number=%u",
			 device_name(f->dev), gen, m->snap_number_previous);
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	return 0;
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
	.list_contexts = image_list_contexts,
	.context_extents = image_context_extents,
};

bool image_name_reserved(const char *name)
{
	size_t n = strlen(name), k = strlen(IMAGE_SUFFIX);

	return n >= k && strcmp(name + n - k, IMAGE_SUFFIX) == 0;
}

int image_device_new(const char *name, struct diff_area *da, struct device **out)
{
	struct backing *b;
	char desc[400];
	int r;

	snprintf(desc, sizeof(desc), "snapshot image of %s", device_name(diff_area_origin(da)));
	r = backing_new_custom(&image_ops, diff_area_get(da), diff_area_capacity(da), desc, &b);
	if (r < 0) {
		diff_area_put(da);
		return r;
	}
	r = device_new(name, b, false, out);
	if (r < 0) {
		backing_close(b);
		return r;
	}
	device_set_removable(*out, false);
	return 0;
}

void image_publish(struct device *img, struct diff_area *da)
{
	char desc[400] = "";

	tracker_with(diff_area_origin(da), describe_on_tracker, desc);
	if (desc[0] && device_set_description(img, desc) < 0)
		log_error("%s: out of memory: its description lacks its CBT's generation; backups of it "
			  "will be full ones", device_name(img));
}
