/* Backing store: pread/pwrite and friends on a regular file or a block device.
 *
 * Buffered I/O through the page cache: any alignment works and FLUSH/FUA map to
 * fdatasync/RWF_DSYNC. Holes are found with SEEK_DATA/SEEK_HOLE; a file that had
 * none when opened and that we have not punched is known dense and skips the
 * lseek calls on the read path. */
#include "core/backing.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/io.h"
#include "common/log.h"
#include "core/extents.h"
#include "core/io.h"
#include "core/store_id.h"

struct backing {
	const struct backing_ops *ops; /* NULL: a file or block device */
	void *priv;
	int fd;
	bool blockdev;
	bool readonly;
	struct store_id ids[STORE_IDS_MAX]; /* where the bytes live */
	size_t n_ids;
	uint64_t size;
	uint32_t lbs;
	atomic_bool maybe_sparse;
	atomic_bool no_zero_range; /* fallocate(ZERO_RANGE) said EOPNOTSUPP once */
	atomic_bool no_punch;      /* fallocate(PUNCH_HOLE) said EOPNOTSUPP once */
	char *path;
};

/* The size of the open store FD (stat ST), rounded down to whole sectors, and
 * its logical block size. Errors are logged here. A store smaller than one
 * sector is refused unless EMPTY_OK (a difference storage that grows). */
static int store_geometry(const char *path, int fd, const struct stat *st, bool empty_ok, uint64_t *size,
			  int *lbs)
{
	*lbs = BDF_SECTOR_SIZE;
	if (S_ISREG(st->st_mode)) {
		*size = (uint64_t)st->st_size;
	} else if (S_ISBLK(st->st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0 || ioctl(fd, BLKSSZGET, lbs) < 0) {
			int err = errno;

			log_error("%s: cannot read block device geometry: %s", path, strerror(err));
			return -err;
		}
	} else {
		log_error("%s: not a regular file or block device", path);
		return -EINVAL;
	}
	if (*size < BDF_SECTOR_SIZE && !empty_ok) {
		log_error("%s: %llu bytes is smaller than one %u-byte sector", path,
			  (unsigned long long)*size, BDF_SECTOR_SIZE);
		return -EINVAL;
	}
	if (*size % BDF_SECTOR_SIZE) {
		log_warn("%s: size %llu is not a whole number of sectors; the last %llu bytes are not served",
			 path, (unsigned long long)*size, (unsigned long long)(*size % BDF_SECTOR_SIZE));
		*size -= *size % BDF_SECTOR_SIZE;
	}
	return 0;
}

static int wrap_fd(int fd, const char *path, bool readonly, bool empty_ok, struct backing **out)
{
	struct backing *b;
	struct stat st;
	uint64_t size;
	int lbs, r;

	if (fstat(fd, &st) < 0) {
		int err = errno;

		log_error("%s: stat: %s", path, strerror(err));
		close(fd);
		return -err;
	}
	r = store_geometry(path, fd, &st, empty_ok, &size, &lbs);
	if (r < 0) {
		close(fd);
		return r;
	}

	b = calloc(1, sizeof(*b));
	if (!b || !(b->path = strdup(path))) {
		free(b);
		close(fd);
		return -ENOMEM;
	}
	b->fd = fd;
	b->blockdev = S_ISBLK(st.st_mode);
	store_ids_of(fd, &st, b->ids, &b->n_ids); /* cannot fail: a file or block device */
	b->readonly = readonly;
	b->size = size;
	b->lbs = (uint32_t)lbs;
	atomic_init(&b->maybe_sparse, !b->blockdev && (uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size);
	atomic_init(&b->no_zero_range, false);
	atomic_init(&b->no_punch, false);
	*out = b;
	return 0;
}

int backing_open(const char *path, bool readonly, struct backing **out)
{
	int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);

	if (fd < 0) {
		int err = errno;

		log_error("%s: cannot open: %s", path, strerror(err));
		return -err;
	}
	return wrap_fd(fd, path, readonly, false, out);
}

int backing_open_fd(int fd, const char *desc, struct backing **out)
{
	return wrap_fd(fd, desc, false, true, out);
}

int backing_new_custom(const struct backing_ops *ops, void *priv, uint64_t size, const char *desc,
		       struct backing **out)
{
	struct backing *b = calloc(1, sizeof(*b));

	if (!b || !(b->path = strdup(desc))) {
		free(b);
		return -ENOMEM;
	}
	b->ops = ops;
	b->priv = priv;
	b->fd = -1;
	b->size = size;
	b->lbs = BDF_SECTOR_SIZE;
	atomic_init(&b->maybe_sparse, false);
	atomic_init(&b->no_zero_range, false);
	atomic_init(&b->no_punch, false);
	*out = b;
	return 0;
}

void backing_close(struct backing *b)
{
	if (!b)
		return;
	if (b->ops && b->ops->close)
		b->ops->close(b->priv);
	if (b->fd >= 0)
		close(b->fd);
	free(b->path);
	free(b);
}

uint64_t backing_size(const struct backing *b)
{
	return b->size;
}

int backing_probe_size(struct backing *b, uint64_t *size)
{
	struct stat st;
	int lbs;

	if (b->ops)
		return -EOPNOTSUPP;
	if (fstat(b->fd, &st) < 0) {
		int err = errno;

		log_error("%s: stat: %s", b->path, strerror(err));
		return -err;
	}
	return store_geometry(b->path, b->fd, &st, false, size, &lbs);
}

int backing_can_resize(const struct backing *b, bool truncate)
{
	return b->ops || (truncate && b->blockdev) ? -EOPNOTSUPP : 0;
}

int backing_resize(struct backing *b, uint64_t size, bool truncate)
{
	int r = backing_can_resize(b, truncate);

	if (r < 0)
		return r;
	if (truncate) {
		if (size > INT64_MAX)
			return -EFBIG;
		if (ftruncate(b->fd, (off_t)size) < 0) {
			int err = errno;

			log_error("%s: cannot truncate to %llu bytes: %s", b->path,
				  (unsigned long long)size, strerror(err));
			return -err;
		}
	}
	/* What a file grew by is a hole (ftruncate, or truncate(1) before a re-read):
	 * from now on, look for holes. */
	if (!b->blockdev && size > b->size)
		atomic_store(&b->maybe_sparse, true);
	b->size = size;
	return 0;
}

uint32_t backing_logical_block_size(const struct backing *b)
{
	return b->lbs;
}

bool backing_is_blockdev(const struct backing *b)
{
	return b->blockdev;
}

bool backing_is_custom(const struct backing *b)
{
	return b->ops != NULL;
}

const char *backing_path(const struct backing *b)
{
	return b->path;
}

int backing_pread(struct backing *b, void *buf, uint64_t count, uint64_t offset)
{
	ssize_t r;

	if (b->ops)
		return b->ops->pread ? b->ops->pread(b->priv, buf, count, offset) : -EOPNOTSUPP;
	r = io_pread_all(b->fd, buf, count, offset);
	if (r < 0)
		return (int)r;
	return (uint64_t)r < count ? -EIO : 0; /* the file shrank under us */
}

int backing_flush(struct backing *b)
{
	if (b->ops)
		return b->ops->flush ? b->ops->flush(b->priv) : 0;
	if (fdatasync(b->fd) < 0)
		return -errno;
	return 0;
}

int backing_pwrite(struct backing *b, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	if (b->ops)
		return b->ops->pwrite ? b->ops->pwrite(b->priv, buf, count, offset, flags) : -EOPNOTSUPP;
	/* io_pwrite_all does the fdatasync where RWF_DSYNC is not supported. */
	return io_pwrite_all(b->fd, buf, count, offset, flags & BDF_FUA ? RWF_DSYNC : 0);
}

static int punch_hole(struct backing *b, uint64_t count, uint64_t offset)
{
	if (atomic_load_explicit(&b->no_punch, memory_order_relaxed))
		return -EOPNOTSUPP;
	if (fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)count) == 0) {
		atomic_store(&b->maybe_sparse, true);
		return 0;
	}
	if (errno == EOPNOTSUPP) {
		atomic_store(&b->no_punch, true);
		return -EOPNOTSUPP;
	}
	return -errno;
}

int backing_trim(struct backing *b, uint64_t count, uint64_t offset, uint32_t flags)
{
	int r;

	if (b->ops)
		return 0; /* advisory */
	if (b->blockdev) {
		uint64_t range[2] = { offset, count };

		/* Discard is advisory: a device that cannot discard has done its job. */
		r = ioctl(b->fd, BLKDISCARD, range) == 0 ? 0 : -errno;
		if (r == -EOPNOTSUPP || r == -ENOTTY || r == -EINVAL)
			r = 0;
	} else {
		r = punch_hole(b, count, offset);
		if (r == -EOPNOTSUPP)
			r = 0;
	}
	if (r == 0 && (flags & BDF_FUA))
		r = backing_flush(b);
	return r;
}

static int write_zeroes_slow(struct backing *b, uint64_t count, uint64_t offset)
{
	const uint64_t chunk = 1u << 20;
	void *zero = calloc(1, count < chunk ? count : chunk);
	int r = 0;

	if (!zero)
		return -ENOMEM;
	while (count > 0 && r == 0) {
		uint64_t n = count < chunk ? count : chunk;

		r = io_pwrite_all(b->fd, zero, n, offset, 0);
		count -= n;
		offset += n;
	}
	free(zero);
	return r;
}

/* A file: zeroes without writing a buffer; -EOPNOTSUPP if the filesystem has no way. */
static int file_zero_fast(struct backing *b, uint64_t count, uint64_t offset, uint32_t flags)
{
	int r;

	if (flags & BDF_MAY_TRIM) {
		r = punch_hole(b, count, offset);
		if (r != -EOPNOTSUPP)
			return r;
	}
	if (!atomic_load_explicit(&b->no_zero_range, memory_order_relaxed)) {
		if (fallocate(b->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)count) == 0)
			return 0;
		if (errno != EOPNOTSUPP)
			return -errno;
		atomic_store(&b->no_zero_range, true);
	}
	/* tmpfs and friends: punch, then allocate again, so that NO_HOLE still holds. */
	r = punch_hole(b, count, offset);
	if (r != 0)
		return r;
	if (fallocate(b->fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)count) < 0)
		return -errno;
	return 0;
}

/* A block device: PUNCH_HOLE is "zero out, never by writing" (it may unmap);
 * ZERO_RANGE keeps the blocks mapped but the kernel may fall back to writing. */
static int blockdev_zero(struct backing *b, uint64_t count, uint64_t offset, uint32_t flags)
{
	if (flags & (BDF_MAY_TRIM | BDF_FAST_ZERO)) {
		if (fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)count) == 0)
			return 0;
		if (errno != EOPNOTSUPP && errno != EINVAL)
			return -errno;
		if (flags & BDF_FAST_ZERO)
			return -EOPNOTSUPP;
	}
	if (fallocate(b->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)count) == 0)
		return 0;
	return errno == EOPNOTSUPP || errno == EINVAL ? -EOPNOTSUPP : -errno;
}

int backing_zero(struct backing *b, uint64_t count, uint64_t offset, uint32_t flags)
{
	int r;

	if (b->ops) {
		if (flags & BDF_FAST_ZERO)
			return -ENOTSUP;
		return b->ops->zero ? b->ops->zero(b->priv, count, offset, flags) : -EOPNOTSUPP;
	}
	r = b->blockdev ? blockdev_zero(b, count, offset, flags) : file_zero_fast(b, count, offset, flags);

	if (r == -EOPNOTSUPP) {
		if (flags & BDF_FAST_ZERO)
			return -ENOTSUP;
		r = write_zeroes_slow(b, count, offset);
	}
	if (r == 0 && (flags & BDF_FUA))
		r = backing_flush(b);
	return r;
}

int backing_cache(struct backing *b, uint64_t count, uint64_t offset)
{
	int r;

	if (b->ops)
		return 0;
	r = posix_fadvise(b->fd, (off_t)offset, (off_t)count, POSIX_FADV_WILLNEED);

	return r == 0 || r == ESPIPE ? 0 : -r;
}

int backing_extents(struct backing *b, uint64_t count, uint64_t offset, uint32_t flags,
		    struct extents *e)
{
	uint64_t end = offset + count, pos = offset;

	if (b->ops && b->ops->extents)
		return b->ops->extents(b->priv, count, offset, flags, e);
	if (b->ops || b->blockdev || !atomic_load_explicit(&b->maybe_sparse, memory_order_relaxed))
		return extents_add(e, offset, count, 0);

	while (pos < end && !extents_done(e)) {
		off_t d, h;
		int r;

		d = lseek(b->fd, (off_t)pos, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO) /* no data past pos: a hole to the end */
				return extents_add(e, pos, end - pos, EXTENT_HOLE | EXTENT_ZERO);
			if (errno == EINVAL || errno == EOPNOTSUPP)
				return extents_add(e, pos, end - pos, 0);
			return -errno;
		}
		if ((uint64_t)d > pos) {
			uint64_t n = (uint64_t)d - pos < end - pos ? (uint64_t)d - pos : end - pos;

			r = extents_add(e, pos, n, EXTENT_HOLE | EXTENT_ZERO);
			if (r < 0)
				return r;
			pos += n;
		} else {
			h = lseek(b->fd, (off_t)pos, SEEK_HOLE);
			if (h < 0)
				return -errno;
			if ((uint64_t)h <= pos) /* cannot happen on a sane fs; do not loop */
				return extents_add(e, pos, end - pos, 0);
			r = extents_add(e, pos, ((uint64_t)h < end ? (uint64_t)h : end) - pos, 0);
			if (r < 0)
				return r;
			pos = (uint64_t)h < end ? (uint64_t)h : end;
		}
		if (flags & BDF_REQ_ONE)
			break;
	}
	return 0;
}

int backing_can_write(const struct backing *b)
{
	return b->ops ? b->ops->pwrite != NULL : !b->readonly;
}

/* A custom store has no trim: its trim is a no-op, and a no-op is not worth
 * advertising. */
int backing_can_trim(const struct backing *b)
{
	return b->ops ? 0 : !b->readonly;
}

int backing_can_zero(const struct backing *b)
{
	return b->ops ? b->ops->zero != NULL : !b->readonly;
}

/* FUA on a read-only store has nothing to persist: a success. */
int backing_can_fua(const struct backing *b)
{
	return b->ops ? b->ops->pwrite != NULL : 1;
}

int backing_can_cache(const struct backing *b)
{
	return 1;
}

/* Every store here is one object under one lock-free page cache or one
 * custom store's own locks: what one connection flushed, another sees. */
int backing_can_multi_conn(const struct backing *b)
{
	return 1;
}

int backing_list_contexts(struct backing *b, meta_context_fn fn, void *opaque)
{
	if (!b->ops || !b->ops->list_contexts)
		return 0;
	return b->ops->list_contexts(b->priv, fn, opaque);
}

int backing_context_extents(struct backing *b, const char *name, uint64_t count, uint64_t offset,
			    uint32_t flags, struct extents *e)
{
	if (!b->ops || !b->ops->context_extents)
		return -ENOENT;
	return b->ops->context_extents(b->priv, name, count, offset, flags, e);
}

size_t backing_ids(const struct backing *b, const struct store_id **ids)
{
	*ids = b->ids;
	return b->ops ? 0 : b->n_ids;
}

/* The bytes B may ever use: a block device's size; all of a file. */
static uint64_t extent_of(const struct backing *b)
{
	return b->blockdev ? b->size : UINT64_MAX;
}

bool backing_overlaps(const struct backing *b, const struct store_id *ids, size_t n, uint64_t offset,
		      uint64_t len)
{
	if (b->ops)
		return false;
	return store_ids_overlap(b->ids, b->n_ids, 0, extent_of(b), ids, n, offset, len);
}

bool backing_same_store(const struct backing *a, const struct backing *b)
{
	if (a->ops || b->ops)
		return false;
	return backing_overlaps(a, b->ids, b->n_ids, 0, extent_of(b));
}
