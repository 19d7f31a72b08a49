/* dm-log's on-disk format, private to the dirty log: the header and the
 * clean bits as bytes in a buffer, and the few calls that move that buffer
 * to and from the log's file or block device.
 *
 * The buffer is the whole log as dm-log writes it: the header (magic, version,
 * nr_regions, little endian) at byte 0, the rest of the first 1024 bytes
 * zero, then the clean bits from byte 1024 in little-endian bit order (region
 * R is bit R % 8 of byte 1024 + R / 8), padded to a 4 KiB page. In memory the
 * bits are 64-bit words (region R is bit R % 64 of word R / 64): a word
 * stored little endian is the same eight bytes, and the bits' start (1024) and
 * the pages' size (4096) are multiples of 8, so a page of the buffer always
 * holds whole words and is encoded or decoded a word at a time. */
#ifndef BDF_DIRTYLOG_DIRTY_LOG_DISK_H
#define BDF_DIRTYLOG_DIRTY_LOG_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define DL_DISK_MAGIC 0x4D695272u	/* "MiRr" */
#define DL_DISK_VERSION 2u
#define DL_DISK_BITS_OFFSET 1024u	/* dm-log's LOG_OFFSET: two sectors */
#define DL_DISK_PAGE 4096u		/* the unit of a write; the buffer's alignment */
#define DL_DISK_HEADER_BYTES 16u	/* magic, version, nr_regions */

struct dl_disk_header {
	uint32_t magic;
	uint32_t version;
	uint64_t nr_regions;
};

/* dm-log's bitset size: REGION_COUNT bits in whole 32-bit words, in bytes. */
uint64_t dl_disk_bitset_bytes(uint64_t region_count);
/* The buffer (and the least size of the file or device): header and bits
 * rounded up to a page. 0 when that does not fit a size_t. */
size_t dl_disk_buffer_size(uint64_t region_count);

/* The page of the buffer that holds word W of the bits, and the words a
 * page holds: [*FIRST, *FIRST + *N) clipped to NWORDS (0 words for a page
 * past the bits). */
size_t dl_disk_word_page(size_t w);
void dl_disk_page_words(size_t page, size_t nwords, size_t *first, size_t *n);

/* The header at BUF's start; put also zeroes the rest of the first 1024
 * bytes, which may hold anything when the buffer was read from disk. */
void dl_disk_put_header(void *buf, const struct dl_disk_header *h);
void dl_disk_get_header(const void *buf, struct dl_disk_header *h);

/* Words [FIRST, FIRST + N) of a bitset to or from the buffer's bits. */
void dl_disk_put_words(void *buf, const uint64_t *words, size_t first, size_t n);
void dl_disk_get_words(const void *buf, uint64_t *words, size_t first, size_t n);

/* Open PATH (O_RDWR | O_CLOEXEC) for the log NAME and see that it holds
 * SIZE bytes: a regular file is extended, a block device that is smaller is
 * -ENOSPC, anything else is -EINVAL. The fd in *FD and the file's stat in
 * *ST. Errors are logged. */
int dl_disk_open(const char *name, const char *path, size_t size, int *fd, struct stat *st);
/* Read LEN bytes from the start: the bytes read (fewer at EOF), or -EIO. */
ssize_t dl_disk_read(const char *name, const char *path, int fd, void *buf, size_t len);
/* Write bytes [OFF, OFF + LEN) of the buffer BUF to the same place on disk,
 * or fdatasync: 0 or -EIO. Each failure is logged with its reason. */
int dl_disk_write(const char *name, const char *path, int fd, const void *buf, size_t off, size_t len);
int dl_disk_sync(const char *name, const char *path, int fd);

#endif
