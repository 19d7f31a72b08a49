/* A bounded list of contiguous extents over [start, end): what the allocation map
 * (and later the CBT) of a range looks like. Producers append in order; the list
 * merges neighbours of the same type and stops at its end or its count limit. */
#ifndef BDF_CORE_EXTENTS_H
#define BDF_CORE_EXTENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXTENT_HOLE 1u /* not allocated (same bit as NBD_STATE_HOLE) */
#define EXTENT_ZERO 2u /* reads as zeroes (same bit as NBD_STATE_ZERO) */
/* In a changes map (not an allocation map): changed (same bit as NBD_STATE_DIRTY). */
#define EXTENT_DIRTY 1u

struct extent {
	uint64_t offset;
	uint64_t length;
	uint32_t type;
};

struct extents;

struct extents *extents_new(uint64_t start, uint64_t end, size_t max_count);
void extents_free(struct extents *e);

/* Append [offset, offset+length) with type. offset must equal extents_next(e).
 * Parts outside [start, end) are clipped. Returns 0, or -EINVAL on a gap,
 * -ENOMEM. Adding to a full list is a no-op. */
int extents_add(struct extents *e, uint64_t offset, uint64_t length, uint32_t type);

/* The first offset not yet described. */
uint64_t extents_next(const struct extents *e);
/* No more extents are wanted: the end is reached or the count limit hit. */
bool extents_done(const struct extents *e);
size_t extents_count(const struct extents *e);
const struct extent *extents_get(const struct extents *e, size_t i);
uint64_t extents_start(const struct extents *e);
uint64_t extents_end(const struct extents *e);

#endif
