/* A restore point as a read-only disk image: what `serve` exports over NBD
 * and `mount` shows as a file. Opening one reads the backup's index (for a
 * version 1 repository, the chain's indexes back to its full backup); reads
 * fetch, check and unpack the blocks they touch. Every block is checked
 * against its checksum or chunk id before a byte of it is returned: a
 * damaged block reads as -EIO, with one message naming it. Thread-safe. */
#ifndef BDF_BACKUP_IMAGE_H
#define BDF_BACKUP_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct image;

struct image_open_opts {
	const char *repo;     /* directory or s3:// URL */
	int64_t at;           /* backup number; -1: the last usable one (of DEVICE) */
	const char *device;   /* version 2: whose last backup; NULL: any device's */
	const char *key_file; /* for an encrypted repository, else NULL */
};

/* Open the restore point (taking the repository's read lock until
 * image_close). Errors printed, negative errno returned. */
int image_open(const struct image_open_opts *o, struct image **out);
void image_close(struct image *im);

uint64_t image_size(const struct image *im);
/* The backup number opened. */
unsigned image_backup(const struct image *im);
/* The repository's block size: the unit of reads and of image_extents. */
uint32_t image_block_size(const struct image *im);

/* pread(2) for the image: LEN bytes at OFFSET (inside the image). 0, or
 * -EIO for a block that cannot be read or fails its check. */
int image_read(struct image *im, void *buf, size_t len, uint64_t offset);

/* The allocation: calls FN for consecutive extents covering [OFFSET,
 * OFFSET+LEN) (clipped to the image), each all data or all zero (a block
 * the backup holds no data for). Nonzero from FN stops and is returned. */
typedef int (*image_extent_fn)(void *opaque, uint64_t offset, uint64_t len, bool zero);
int image_extents(struct image *im, uint64_t offset, uint64_t len, image_extent_fn fn, void *opaque);

#endif
