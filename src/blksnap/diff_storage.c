/* Difference storage (see diff_storage.h). */
#include "blksnap/diff_storage.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fault.h"
#include "common/lock_order.h"
#include "blksnap/event_queue.h"
#include "blksnap/params.h"
#include "blksnap/tracker.h"
#include "common/log.h"
#include "core/backing.h"
#include "core/io.h"
#include "core/store_id.h"

struct ds_file {
	struct backing *b;
};

struct ds_range {
	size_t file;       /* index into files */
	uint64_t file_off; /* bytes */
	uint64_t len;      /* bytes */
	uint64_t virt;     /* where it starts in the linear space */
};

struct diff_storage {
	pthread_mutex_t lock;
	const struct params *params;
	struct event_queue *events;
	struct backing **files;
	size_t n_files;
	struct ds_range *ranges;
	size_t n_ranges;
	uint64_t capacity; /* bytes appended */
	uint64_t cursor;   /* next free linear byte */
	uint64_t requested, filled; /* sectors */
	bool overflow;
	/* self-growing */
	bool growing;
	size_t grow_file;
	uint64_t grow_size, grow_limit;
};

int diff_storage_new(const struct params *p, struct event_queue *events, struct diff_storage **out)
{
	struct diff_storage *ds = calloc(1, sizeof(*ds));

	if (!ds)
		return -ENOMEM;
	pthread_mutex_init(&ds->lock, NULL);
	ds->params = p;
	ds->events = events;
	*out = ds;
	return 0;
}

void diff_storage_free(struct diff_storage *ds)
{
	if (!ds)
		return;
	for (size_t i = 0; i < ds->n_files; i++)
		backing_close(ds->files[i]);
	free(ds->files);
	free(ds->ranges);
	pthread_mutex_destroy(&ds->lock);
	free(ds);
}

/* ---- stores to append ---- */

static int open_failed(const char *path, int e, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: %s", path, strerror(e));
	return -e;
}

static int wrap(int fd, const char *path, struct ds_file **out, char *err, size_t errlen)
{
	struct ds_file *f = calloc(1, sizeof(*f));
	struct stat st;
	int r;

	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	if (fstat(fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
		snprintf(err, errlen, "%s: not a regular file or block device", path);
		close(fd);
		free(f);
		return -EINVAL;
	}
	r = backing_open_fd(fd, path, &f->b);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		free(f);
		return r;
	}
	*out = f;
	return 0;
}

int ds_file_open(const char *path, struct ds_file **out, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return open_failed(path, errno, err, errlen);
	return wrap(fd, path, out, err, errlen);
}

int ds_file_create(const char *path, struct ds_file **out, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	else
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return open_failed(path, errno, err, errlen);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file or directory", path);
		close(fd);
		return -EINVAL;
	}
	return wrap(fd, path, out, err, errlen);
}

int ds_file_wrap(struct backing *b, struct ds_file **out)
{
	struct ds_file *f = calloc(1, sizeof(*f));

	if (!f) {
		backing_close(b);
		return -ENOMEM;
	}
	f->b = b;
	*out = f;
	return 0;
}

void ds_file_free(struct ds_file *f)
{
	if (!f)
		return;
	backing_close(f->b);
	free(f);
}

uint64_t ds_file_size(const struct ds_file *f)
{
	return backing_size(f->b);
}

size_t ds_file_ids(const struct ds_file *f, const struct store_id **ids)
{
	return backing_ids(f->b, ids);
}

int ds_file_ranges(const struct ds_file *f, const struct sector_range *r, size_t n, struct byte_range *out,
		   char *err, size_t errlen)
{
	uint64_t sectors = backing_size(f->b) / BDF_SECTOR_SIZE;
	const char *path = backing_path(f->b);

	if (n == 0) {
		if (sectors == 0) {
			snprintf(err, errlen, "%s: empty", path);
			return -EINVAL;
		}
		out[0] = (struct byte_range){ 0, sectors * BDF_SECTOR_SIZE };
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (r[i].count == 0 || r[i].offset > sectors || r[i].count > sectors - r[i].offset) {
			snprintf(err, errlen, "%s: range %llu:%llu is outside its %llu sectors", path,
				 (unsigned long long)r[i].offset, (unsigned long long)r[i].count,
				 (unsigned long long)sectors);
			return -EINVAL;
		}
		for (size_t k = 0; k < i; k++)
			if (r[i].offset < r[k].offset + r[k].count && r[k].offset < r[i].offset + r[i].count) {
				snprintf(err, errlen, "%s: ranges %llu:%llu and %llu:%llu overlap", path,
					 (unsigned long long)r[k].offset, (unsigned long long)r[k].count,
					 (unsigned long long)r[i].offset, (unsigned long long)r[i].count);
				return -EINVAL;
			}
		out[i] = (struct byte_range){ r[i].offset * BDF_SECTOR_SIZE, r[i].count * BDF_SECTOR_SIZE };
	}
	return 0;
}

/* ---- the linear space ---- */

/* F's store joins the storage (lock held); F is freed. */
static int add_file_locked(struct diff_storage *ds, struct ds_file *f, size_t *index)
{
	struct backing **v = realloc(ds->files, (ds->n_files + 1) * sizeof(*v));

	if (!v) {
		ds_file_free(f);
		return -ENOMEM;
	}
	ds->files = v;
	v[ds->n_files] = f->b;
	free(f);
	*index = ds->n_files++;
	return 0;
}

static int add_range_locked(struct diff_storage *ds, size_t file, uint64_t off, uint64_t len)
{
	struct ds_range *v = realloc(ds->ranges, (ds->n_ranges + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	ds->ranges = v;
	v[ds->n_ranges++] = (struct ds_range){ .file = file, .file_off = off, .len = len, .virt = ds->capacity };
	ds->capacity += len;
	return 0;
}

/* Growth continues the last range when it is the same file: chunks larger
 * than one step still find room in one piece. */
static int extend_or_add_locked(struct diff_storage *ds, size_t file, uint64_t off, uint64_t len)
{
	struct ds_range *last = ds->n_ranges ? &ds->ranges[ds->n_ranges - 1] : NULL;

	if (last && last->file == file && last->file_off + last->len == off &&
	    last->virt + last->len == ds->capacity) {
		last->len += len;
		ds->capacity += len;
		return 0;
	}
	return add_range_locked(ds, file, off, len);
}

int diff_storage_append(struct diff_storage *ds, struct ds_file *f, const struct byte_range *r, size_t n)
{
	size_t file;
	int ret;

	lock_mutex(&ds->lock, LOCK_STORAGE);
	ret = add_file_locked(ds, f, &file);
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = add_range_locked(ds, file, r[i].offset, r[i].len);
	unlock_mutex(&ds->lock, LOCK_STORAGE);
	return ret;
}

static void event_low(struct diff_storage *ds)
{
	struct event ev = { .code = EVENT_LOW_FREE_SPACE };

	ev.low_free_space.requested_nr_sect = ds->params->diff_storage_minimum;
	ds->requested += ds->params->diff_storage_minimum;
	event_queue_push(ds->events, &ev);
}

/* Growing mode: one more step of the file, or the event once at the limit. */
static void grow_or_ask(struct diff_storage *ds)
{
	uint64_t step = (uint64_t)ds->params->diff_storage_minimum * BDF_SECTOR_SIZE, size;
	struct backing *b;
	int r;

	if (!ds->growing || ds->grow_size >= ds->grow_limit) {
		event_low(ds);
		return;
	}
	b = ds->files[ds->grow_file];
	size = ds->grow_size + step < ds->grow_limit ? ds->grow_size + step : ds->grow_limit;
	r = backing_resize(b, size, true);
	if (r == 0)
		r = extend_or_add_locked(ds, ds->grow_file, ds->grow_size, size - ds->grow_size);
	if (r < 0) {
		log_warn("difference storage %s: cannot grow: %s", backing_path(b), strerror(-r));
		event_low(ds);
		return;
	}
	log_debug("difference storage %s grown to %llu bytes", backing_path(b), (unsigned long long)size);
	ds->requested += (size - ds->grow_size) / BDF_SECTOR_SIZE;
	ds->grow_size = size;
}

/* blksnap: whenever requested - filled falls to half the minimum, ask again. */
static void check_low(struct diff_storage *ds)
{
	uint64_t half = ds->params->diff_storage_minimum / 2;

	if (ds->filled >= ds->requested || ds->requested - ds->filled <= half)
		grow_or_ask(ds);
}

void diff_storage_start(struct diff_storage *ds)
{
	lock_mutex(&ds->lock, LOCK_STORAGE);
	if (ds->growing)
		check_low(ds);
	else
		grow_or_ask(ds);
	unlock_mutex(&ds->lock, LOCK_STORAGE);
}

int diff_storage_set_growing(struct diff_storage *ds, struct ds_file *f, uint64_t limit)
{
	uint64_t size = ds_file_size(f);
	int r;

	lock_mutex(&ds->lock, LOCK_STORAGE);
	r = add_file_locked(ds, f, &ds->grow_file);
	if (r == 0 && size > 0)
		r = add_range_locked(ds, ds->grow_file, 0, size);
	if (r == 0) {
		/* blksnap's accounting counts what the file holds already as
		 * asked for; growing starts when it runs low. */
		ds->growing = true;
		ds->grow_size = size;
		ds->grow_limit = limit > size ? limit : size;
		ds->requested = size / BDF_SECTOR_SIZE;
	}
	unlock_mutex(&ds->lock, LOCK_STORAGE);
	return r;
}

static int alloc_locked(struct diff_storage *ds, uint64_t bytes, uint64_t *virt)
{
	int r = -ENOSPC;

	for (size_t i = 0; !ds->overflow && i < ds->n_ranges; i++) {
		struct ds_range *rg = &ds->ranges[i];

		if (ds->cursor >= rg->virt + rg->len)
			continue;
		if (ds->cursor < rg->virt)
			ds->cursor = rg->virt;
		if (rg->virt + rg->len - ds->cursor < bytes)
			continue; /* a chunk never straddles two ranges */
		*virt = ds->cursor;
		ds->cursor += bytes;
		ds->filled += (bytes + BDF_SECTOR_SIZE - 1) / BDF_SECTOR_SIZE;
		check_low(ds);
		r = 0;
		break;
	}
	return r;
}

int diff_storage_alloc(struct diff_storage *ds, uint64_t bytes, uint64_t *virt)
{
	int r;

	lock_mutex(&ds->lock, LOCK_STORAGE);
	r = alloc_locked(ds, bytes, virt);
	/* Out of room but allowed to grow: grow until the chunk fits or the limit. */
	while (r < 0 && ds->growing && !ds->overflow && ds->grow_size < ds->grow_limit) {
		uint64_t before = ds->grow_size;

		grow_or_ask(ds);
		if (ds->grow_size == before)
			break; /* could not grow */
		r = alloc_locked(ds, bytes, virt);
	}
	if (r < 0)
		ds->overflow = true;
	unlock_mutex(&ds->lock, LOCK_STORAGE);
	return r;
}

/* Map [virt, virt+len) (inside one range) to a store and offset. */
static int locate(struct diff_storage *ds, uint64_t virt, uint64_t len, struct backing **b, uint64_t *off)
{
	int r = -EIO;

	lock_mutex(&ds->lock, LOCK_STORAGE);
	for (size_t i = 0; i < ds->n_ranges; i++) {
		struct ds_range *rg = &ds->ranges[i];

		if (virt >= rg->virt && virt - rg->virt < rg->len) {
			if (len > rg->len - (virt - rg->virt))
				break;
			*b = ds->files[rg->file];
			*off = rg->file_off + (virt - rg->virt);
			r = 0;
			break;
		}
	}
	unlock_mutex(&ds->lock, LOCK_STORAGE);
	return r;
}

/* The fault points stand for the store failing: docs/faults.md. */
int diff_storage_read(struct diff_storage *ds, uint64_t virt, void *buf, uint64_t len)
{
	struct backing *b;
	uint64_t off;
	int r = locate(ds, virt, len, &b, &off);

	if (r == 0)
		r = fault_point_hit("diff_storage.read");
	return r < 0 ? r : backing_pread(b, buf, len, off);
}

int diff_storage_write(struct diff_storage *ds, uint64_t virt, const void *buf, uint64_t len)
{
	struct backing *b;
	uint64_t off;
	int r = locate(ds, virt, len, &b, &off);

	if (r == 0)
		r = fault_point_hit("diff_storage.write");
	return r < 0 ? r : backing_pwrite(b, buf, len, off, 0);
}

/* Stores only ever join the storage, and leave it when it is freed: the
 * ones there now can be flushed without the lock, which allocations need
 * meanwhile. */
int diff_storage_flush(struct diff_storage *ds)
{
	size_t n;
	int r = 0;

	lock_mutex(&ds->lock, LOCK_STORAGE);
	n = ds->n_files;
	unlock_mutex(&ds->lock, LOCK_STORAGE);
	for (size_t i = 0; i < n; i++) {
		struct backing *b;
		int e;

		lock_mutex(&ds->lock, LOCK_STORAGE);
		b = ds->files[i]; /* files may move when the array grows */
		unlock_mutex(&ds->lock, LOCK_STORAGE);
		e = backing_flush(b);
		if (e < 0 && r == 0)
			r = e;
	}
	return r;
}

void diff_storage_stats(struct diff_storage *ds, struct diff_storage_stats *st)
{
	lock_mutex(&ds->lock, LOCK_STORAGE);
	st->capacity = ds->capacity;
	st->used = ds->cursor;
	st->requested = ds->requested;
	st->filled = ds->filled;
	st->overflow = ds->overflow;
	unlock_mutex(&ds->lock, LOCK_STORAGE);
}
