/* The backing store: a regular file or a block device under a device's filter stack.
 * Only this layer knows how the bytes are stored (O_DIRECT, fallocate, ioctls). */
#ifndef BDF_CORE_BACKING_H
#define BDF_CORE_BACKING_H

#include <stdbool.h>
#include <stdint.h>

struct extents;
struct backing;

/* Opens PATH. The size is the file's size rounded down to whole sectors; a store
 * smaller than one sector is refused. Errors are logged here. */
int backing_open(const char *path, bool readonly, struct backing **out);
void backing_close(struct backing *b);

uint64_t backing_size(const struct backing *b);
uint32_t backing_logical_block_size(const struct backing *b);
bool backing_is_blockdev(const struct backing *b);
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

#endif
