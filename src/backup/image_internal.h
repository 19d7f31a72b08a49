/* The restore point's insides (image.h), shared by the dispatcher (image.c)
 * and the reader of each repository version: image_v1.c for version 1 (a
 * full backup and a chain of incrementals) and image_v2.c for version 2
 * (content-addressed chunks in an object store).
 *
 * A reader's open fills a struct of its own that begins with struct image,
 * sets ops, size, backup and block_size, and holds the repository's read
 * lock until its close. The dispatcher checks every range before it calls
 * an op: read gets 0 < len and [offset, offset+len) inside the image;
 * extents gets a non-empty range clipped to the image. Both run on many
 * threads at once. */
#ifndef BDF_BACKUP_IMAGE_INTERNAL_H
#define BDF_BACKUP_IMAGE_INTERNAL_H

#include "backup/image.h"

struct image_ops {
	/* 0, or -EIO for a block that cannot be read or fails its check (the
	 * message printed by the op, naming the backup and the block). */
	int (*read)(struct image *im, void *buf, size_t len, uint64_t offset);
	/* Consecutive extents covering the range, as image_extents says. */
	int (*extents)(struct image *im, uint64_t offset, uint64_t len, image_extent_fn fn, void *opaque);
	/* Free everything and release the repository's lock. */
	void (*close)(struct image *im);
};

struct image {
	const struct image_ops *ops;
	uint64_t size;
	unsigned backup;
	uint32_t block_size;
};

/* The readers' opens: errors printed, negative errno returned. */
int image_v1_open(const struct image_open_opts *o, struct image **out);
int image_v2_open(const struct image_open_opts *o, struct image **out);

#endif
