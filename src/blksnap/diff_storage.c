/* Difference storage (see diff_storage.h). */
#include "blksnap/diff_storage.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "core/io.h"
#include "blksnap/event_queue.h"
#include "blksnap/params.h"
#include "blksnap/tracker.h"

struct ds_file {
	int fd;
	char *path;
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
	struct ds_file *files;
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
	for (size_t i = 0; i < ds->n_files; i++) {
		close(ds->files[i].fd);
		free(ds->files[i].path);
	}
	free(ds->files);
	free(ds->ranges);
	pthread_mutex_destroy(&ds->lock);
	free(ds);
}

static int add_file(struct diff_storage *ds, int fd, const char *path, size_t *index)
{
	struct ds_file *v = realloc(ds->files, (ds->n_files + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	ds->files = v;
	v[ds->n_files].fd = fd;
	v[ds->n_files].path = strdup(path);
	*index = ds->n_files++;
	return 0;
}

static int add_range(struct diff_storage *ds, size_t file, uint64_t off, uint64_t len)
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
static int extend_or_add(struct diff_storage *ds, size_t file, uint64_t off, uint64_t len)
{
	struct ds_range *last = ds->n_ranges ? &ds->ranges[ds->n_ranges - 1] : NULL;

	if (last && last->file == file && last->file_off + last->len == off &&
	    last->virt + last->len == ds->capacity) {
		last->len += len;
		ds->capacity += len;
		return 0;
	}
	return add_range(ds, file, off, len);
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

	if (!ds->growing || ds->grow_size >= ds->grow_limit) {
		event_low(ds);
		return;
	}
	size = ds->grow_size + step < ds->grow_limit ? ds->grow_size + step : ds->grow_limit;
	if (ftruncate(ds->files[ds->grow_file].fd, (off_t)size) < 0 ||
	    extend_or_add(ds, ds->grow_file, ds->grow_size, size - ds->grow_size) < 0) {
		log_warn("difference storage %s: cannot grow: %s", ds->files[ds->grow_file].path, strerror(errno));
		event_low(ds);
		return;
	}
	log_debug("difference storage %s grown to %llu bytes", ds->files[ds->grow_file].path,
		  (unsigned long long)size);
	ds->requested += ds->params->diff_storage_minimum;
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
	pthread_mutex_lock(&ds->lock);
	grow_or_ask(ds);
	pthread_mutex_unlock(&ds->lock);
}

static int open_rw(const char *path, uint64_t *size, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (fstat(fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
		snprintf(err, errlen, "%s: not a regular file or block device", path);
		close(fd);
		return -EINVAL;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0) {
			int e = errno;

			snprintf(err, errlen, "%s: %s", path, strerror(e));
			close(fd);
			return -e;
		}
	} else {
		*size = (uint64_t)st.st_size;
	}
	return fd;
}

int diff_storage_append(struct diff_storage *ds, const char *path, const struct sector_range *r, size_t n,
			char *err, size_t errlen)
{
	uint64_t size, sectors;
	size_t file;
	int fd, ret = 0;

	fd = open_rw(path, &size, err, errlen);
	if (fd < 0)
		return fd;
	sectors = size / BDF_SECTOR_SIZE;
	for (size_t i = 0; i < n; i++)
		if (r[i].count == 0 || r[i].offset > sectors || r[i].count > sectors - r[i].offset) {
			snprintf(err, errlen, "%s: range %llu:%llu is outside its %llu sectors", path,
				 (unsigned long long)r[i].offset, (unsigned long long)r[i].count,
				 (unsigned long long)sectors);
			close(fd);
			return -EINVAL;
		}
	if (n == 0 && sectors == 0) {
		snprintf(err, errlen, "%s: empty", path);
		close(fd);
		return -EINVAL;
	}
	pthread_mutex_lock(&ds->lock);
	ret = add_file(ds, fd, path, &file);
	if (ret == 0 && n == 0)
		ret = add_range(ds, file, 0, sectors * BDF_SECTOR_SIZE);
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = add_range(ds, file, r[i].offset * BDF_SECTOR_SIZE, r[i].count * BDF_SECTOR_SIZE);
	pthread_mutex_unlock(&ds->lock);
	if (ret < 0)
		snprintf(err, errlen, "out of memory");
	return ret;
}

int diff_storage_set_growing(struct diff_storage *ds, const char *path, uint64_t limit,
			     char *err, size_t errlen)
{
	struct stat st;
	int fd, r;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	else
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file or directory", path);
		close(fd);
		return -EINVAL;
	}
	pthread_mutex_lock(&ds->lock);
	r = add_file(ds, fd, path, &ds->grow_file);
	if (r == 0) {
		ds->growing = true;
		/* A file we are handed may hold something: start after it. */
		ds->grow_size = ((uint64_t)st.st_size + BDF_SECTOR_SIZE - 1) / BDF_SECTOR_SIZE * BDF_SECTOR_SIZE;
		ds->grow_limit = limit;
		if (ds->grow_size > ds->grow_limit)
			ds->grow_limit = ds->grow_size;
	}
	pthread_mutex_unlock(&ds->lock);
	if (r < 0) {
		close(fd);
		snprintf(err, errlen, "out of memory");
	}
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

	pthread_mutex_lock(&ds->lock);
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
	pthread_mutex_unlock(&ds->lock);
	return r;
}

/* Map [virt, virt+len) (inside one range) to a file and offset. */
static int locate(struct diff_storage *ds, uint64_t virt, uint64_t len, int *fd, uint64_t *off)
{
	int r = -EIO;

	pthread_mutex_lock(&ds->lock);
	for (size_t i = 0; i < ds->n_ranges; i++) {
		struct ds_range *rg = &ds->ranges[i];

		if (virt >= rg->virt && virt - rg->virt < rg->len) {
			if (len > rg->len - (virt - rg->virt))
				break;
			*fd = ds->files[rg->file].fd;
			*off = rg->file_off + (virt - rg->virt);
			r = 0;
			break;
		}
	}
	pthread_mutex_unlock(&ds->lock);
	return r;
}

int diff_storage_read(struct diff_storage *ds, uint64_t virt, void *buf, uint64_t len)
{
	uint64_t off;
	char *p = buf;
	int fd, r = locate(ds, virt, len, &fd, &off);

	while (r == 0 && len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* a sparse grown file reads short past its written end: zeroes */
			if (n == 0) {
				memset(p, 0, len);
				break;
			}
			r = -errno;
			break;
		}
		p += n;
		len -= (uint64_t)n;
		off += (uint64_t)n;
	}
	return r;
}

int diff_storage_write(struct diff_storage *ds, uint64_t virt, const void *buf, uint64_t len)
{
	uint64_t off;
	const char *p = buf;
	int fd, r = locate(ds, virt, len, &fd, &off);

	while (r == 0 && len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		p += n;
		len -= (uint64_t)n;
		off += (uint64_t)n;
	}
	return r;
}

int diff_storage_flush(struct diff_storage *ds)
{
	int r = 0;

	pthread_mutex_lock(&ds->lock);
	for (size_t i = 0; i < ds->n_files; i++)
		if (fdatasync(ds->files[i].fd) < 0 && r == 0)
			r = -errno;
	pthread_mutex_unlock(&ds->lock);
	return r;
}

void diff_storage_stats(struct diff_storage *ds, struct diff_storage_stats *st)
{
	pthread_mutex_lock(&ds->lock);
	st->capacity = ds->capacity;
	st->used = ds->cursor;
	st->requested = ds->requested;
	st->filled = ds->filled;
	st->overflow = ds->overflow;
	pthread_mutex_unlock(&ds->lock);
}
