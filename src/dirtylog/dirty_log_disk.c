/* dm-log's on-disk format (see dirty_log_disk.h): encoding the header and
 * the clean bits into the log's buffer and back, and the reads, writes and
 * flushes of that buffer. It knows nothing of the log's state; the failures
 * it meets are logged here, where errno still says why, and reach the log as
 * -EIO, which is all dm-log tells its mirror. */
#include "dirtylog/dirty_log_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/fault.h"
#include "common/io.h"
#include "common/log.h"

/* Words of the bits in page 0, after the header's 1024 bytes, and in every
 * later page. */
#define WORDS_PAGE0 ((DL_DISK_PAGE - DL_DISK_BITS_OFFSET) / 8u)
#define WORDS_PAGE (DL_DISK_PAGE / 8u)

uint64_t dl_disk_bitset_bytes(uint64_t region_count)
{
	/* dm-log counts its bitset in uint32_t words. */
	return (region_count + 31) / 32 * 4;
}

size_t dl_disk_buffer_size(uint64_t region_count)
{
	uint64_t bytes;

	if (region_count > UINT64_MAX - 31)	/* the rounding up would wrap */
		return 0;
	bytes = DL_DISK_BITS_OFFSET + dl_disk_bitset_bytes(region_count);
	bytes = (bytes + DL_DISK_PAGE - 1) / DL_DISK_PAGE * DL_DISK_PAGE;
	if (bytes > SIZE_MAX / 2)
		return 0;
	return (size_t)bytes;
}

size_t dl_disk_word_page(size_t w)
{
	return w < WORDS_PAGE0 ? 0 : 1 + (w - WORDS_PAGE0) / WORDS_PAGE;
}

void dl_disk_page_words(size_t page, size_t nwords, size_t *first, size_t *n)
{
	size_t f, end;

	if (page == 0) {
		f = 0;
		end = WORDS_PAGE0;
	} else {
		f = WORDS_PAGE0 + (page - 1) * WORDS_PAGE;
		end = f + WORDS_PAGE;
	}
	if (f > nwords)
		f = nwords;
	if (end > nwords)
		end = nwords;
	*first = f;
	*n = end - f;
}

void dl_disk_put_header(void *buf, const struct dl_disk_header *h)
{
	char *p = buf;

	memset(p, 0, DL_DISK_BITS_OFFSET);
	put_le32(p, h->magic);
	put_le32(p + 4, h->version);
	put_le64(p + 8, h->nr_regions);
}

void dl_disk_get_header(const void *buf, struct dl_disk_header *h)
{
	const char *p = buf;

	h->magic = get_le32(p);
	h->version = get_le32(p + 4);
	h->nr_regions = get_le64(p + 8);
}

void dl_disk_put_words(void *buf, const uint64_t *words, size_t first, size_t n)
{
	char *p = (char *)buf + DL_DISK_BITS_OFFSET;

	for (size_t w = first; w < first + n; w++)
		put_le64(p + w * 8, words[w]);
}

void dl_disk_get_words(const void *buf, uint64_t *words, size_t first, size_t n)
{
	const char *p = (const char *)buf + DL_DISK_BITS_OFFSET;

	for (size_t w = first; w < first + n; w++)
		words[w] = get_le64(p + w * 8);
}

int dl_disk_open(const char *name, const char *path, size_t size, int *fdp, struct stat *st)
{
	uint64_t have;
	int fd, r;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		log_error("dirty log %s: cannot open the log %s: %s", name, path, strerror(-r));
		return r;
	}
	if (fstat(fd, st) < 0) {
		r = -errno;
		log_error("dirty log %s: cannot stat the log %s: %s", name, path, strerror(-r));
		goto fail;
	}
	if (S_ISREG(st->st_mode)) {
		/* A new file, or one made for fewer regions: the bits it lacks
		 * read as zeros, and a zero magic is a new log at resume. */
		if ((uint64_t)st->st_size < size && ftruncate(fd, (off_t)size) < 0) {
			r = -errno;
			log_error("dirty log %s: cannot extend the log %s to %zu bytes: %s", name, path,
				  size, strerror(-r));
			goto fail;
		}
	} else if (S_ISBLK(st->st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &have) < 0) {
			r = -errno;
			log_error("dirty log %s: cannot get the size of the log device %s: %s", name, path,
				  strerror(-r));
			goto fail;
		}
		if (have < size) {
			log_error("dirty log %s: the log device %s is too small: %" PRIu64
				  " bytes, %zu needed", name, path, have, size);
			r = -ENOSPC;
			goto fail;
		}
	} else {
		log_error("dirty log %s: the log %s is neither a regular file nor a block device", name,
			  path);
		r = -EINVAL;
		goto fail;
	}
	*fdp = fd;
	return 0;
fail:
	close(fd);
	return r;
}

ssize_t dl_disk_read(const char *name, const char *path, int fd, void *buf, size_t len)
{
	ssize_t n = io_pread_all(fd, buf, len, 0);

	if (n < 0) {
		log_error("dirty log %s: read of the log %s failed: %s", name, path, strerror((int)-n));
		return -EIO;
	}
	return n;
}

int dl_disk_write(const char *name, const char *path, int fd, const void *buf, size_t off, size_t len)
{
	int r = fault_point_hit("dirty_log.write"); /* the log's device failing: docs/faults.md */

	if (r == 0)
		r = io_pwrite_all(fd, (const char *)buf + off, len, off, 0);

	if (r < 0) {
		log_error("dirty log %s: write of the log %s (%zu bytes at %zu) failed: %s", name, path,
			  len, off, strerror(-r));
		return -EIO;
	}
	return 0;
}

int dl_disk_sync(const char *name, const char *path, int fd)
{
	int r = fault_point_hit("dirty_log.sync");

	while (r == 0 && fdatasync(fd) < 0)
		if (errno != EINTR)
			r = -errno;
	if (r < 0) {
		log_error("dirty log %s: fdatasync of the log %s failed: %s", name, path, strerror(-r));
		return -EIO;
	}
	return 0;
}
