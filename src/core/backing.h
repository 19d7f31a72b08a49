/* The backing store: a regular file or a block device under a device's filter stack.
 * Only this layer knows how the bytes are stored (O_DIRECT, fallocate, ioctls). */
#ifndef BDF_CORE_BACKING_H
#define BDF_CORE_BACKING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/meta_context.h"

struct extents;
struct backing;
struct store_id;

/* A backing store that is not a file: a snapshot image, say. Every op gets
 * PRIV; a missing op is a no-op success (flush, trim, cache) or -EOPNOTSUPP. */
struct backing_ops {
	int (*pread)(void *priv, void *buf, uint64_t count, uint64_t offset);
	int (*pwrite)(void *priv, const void *buf, uint64_t count, uint64_t offset, uint32_t flags);
	int (*flush)(void *priv);
	int (*zero)(void *priv, uint64_t count, uint64_t offset, uint32_t flags);
	void (*close)(void *priv);
	/* Optional: the allocation map; without it, everything is data. */
	int (*extents)(void *priv, uint64_t count, uint64_t offset, uint32_t flags, struct extents *e);
	/* Optional: metadata contexts the store publishes (see filter.h). */
	int (*list_contexts)(void *priv, meta_context_fn fn, void *opaque);
	int (*context_extents)(void *priv, const char *name, uint64_t count, uint64_t offset, uint32_t flags,
			       struct extents *e);
};

/* A backing store served by OPS; DESC names it in logs and listings. */
int backing_new_custom(const struct backing_ops *ops, void *priv, uint64_t size, const char *desc,
		       struct backing **out);

/* Opens PATH. The size is the file's size rounded down to whole sectors; a store
 * smaller than one sector is refused. Errors are logged here. */
int backing_open(const char *path, bool readonly, struct backing **out);
/* The open file or block device FD (taken: closed on failure too), read and
 * written, named DESC in logs; an empty file is fine (a store that grows). */
int backing_open_fd(int fd, const char *desc, struct backing **out);
void backing_close(struct backing *b);
/* The store's ids (core/store_id.h): none for a custom store. */
size_t backing_ids(const struct backing *b, const struct store_id **ids);

uint64_t backing_size(const struct backing *b);
/* The store's size as it is now, found as backing_open finds it (a file's
 * size rounded down to whole sectors; a block device's capacity): for a
 * resize after `truncate` or after a block device grew. -EINVAL below one
 * sector; -EOPNOTSUPP for a custom store, whose size never changes. */
int backing_probe_size(struct backing *b, uint64_t *size);
/* 0 if backing_resize() can work: -EOPNOTSUPP for a custom store, and with
 * TRUNCATE for a block device (its size is its own tools' business). */
int backing_can_resize(const struct backing *b, bool truncate);
/* Serve SIZE bytes from now on (the caller has drained all I/O). With
 * TRUNCATE a regular file is grown or shrunk to SIZE first. */
int backing_resize(struct backing *b, uint64_t size, bool truncate);
uint32_t backing_logical_block_size(const struct backing *b);
bool backing_is_blockdev(const struct backing *b);
/* Made by backing_new_custom? */
bool backing_is_custom(const struct backing *b);
const char *backing_path(const struct backing *b);

/* All return 0 or a negative errno. Ranges are checked by the caller (device.c). */
int backing_pread(struct backing *b, void *buf, uint64_t count, uint64_t offset);
int backing_pwrite(struct backing *b, const void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int backing_flush(struct backing *b);
int backing_trim(struct backing *b, uint64_t count, uint64_t offset, uint32_t flags);
int backing_zero(struct backing *b, uint64_t count, uint64_t offset, uint32_t flags);
int backing_cache(struct backing *b, uint64_t count, uint64_t offset);
int backing_extents(struct backing *b, uint64_t count, uint64_t offset, uint32_t flags,
		    struct extents *e);
/* What the store supports (1 or 0): the filter_ops can_* questions, at the bottom. */
int backing_can_write(const struct backing *b);
int backing_can_trim(const struct backing *b);
int backing_can_zero(const struct backing *b);
int backing_can_fua(const struct backing *b);
int backing_can_cache(const struct backing *b);
int backing_can_multi_conn(const struct backing *b);

/* A custom store's metadata contexts (none for a file or block device). */
int backing_list_contexts(struct backing *b, meta_context_fn fn, void *opaque);
int backing_context_extents(struct backing *b, const char *name, uint64_t count, uint64_t offset,
			    uint32_t flags, struct extents *e);

/* Do A and B share a byte of storage (core/store_id.h)? A file counts whole,
 * past the device's size too: a resize may reach it. Never for a custom store. */
bool backing_same_store(const struct backing *a, const struct backing *b);
/* Does [offset, offset+len) of the store with ids IDS share a byte with B? */
bool backing_overlaps(const struct backing *b, const struct store_id *ids, size_t n, uint64_t offset,
		      uint64_t len);

#endif
