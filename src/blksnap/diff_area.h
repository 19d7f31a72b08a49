/* The diff area of one device in a taken snapshot: its chunks, the copy of
 * the blocks a write is about to overwrite into the difference storage
 * before the write (once per block, concurrent writers waiting for the one
 * copy; room is reserved a chunk at a time), and the image's reads and
 * writes. */
#ifndef BDF_BLKSNAP_DIFF_AREA_H
#define BDF_BLKSNAP_DIFF_AREA_H

#include <stdbool.h>
#include <stdint.h>

struct cbt_map;
struct device;
struct diff_area;
struct diff_storage;
struct event_queue;
struct extents;
struct filter;
struct params;

/* Chunk geometry blksnap picks for CAPACITY bytes and a minimum I/O size. */
void diff_area_geometry(const struct params *p, uint64_t capacity, uint32_t min_io, unsigned *shift,
			uint64_t *count);

/* The area holds references on ORIG; STORAGE and EVENTS must outlive it (the
 * snapshot they belong to is kept alive by OWNER_GET/OWNER_PUT). */
int diff_area_new(struct device *orig, const struct params *p, struct diff_storage *storage,
		  struct event_queue *events, void (*owner_put)(void *), void *owner,
		  struct diff_area **out);
struct diff_area *diff_area_get(struct diff_area *da);
void diff_area_put(struct diff_area *da);

/* The origin path (tracker, device drained against take): copy every block of
 * [offset, offset+count) not yet in the storage. Failures corrupt the image,
 * never the origin write, so this returns nothing. */
void diff_area_cow(struct diff_area *da, struct filter *tracker, uint64_t offset, uint64_t count);

/* The image path, with TRACKER the origin's tracker (held against detach). */
int diff_area_image_read(struct diff_area *da, struct filter *tracker, void *buf, uint64_t count,
			 uint64_t offset);
int diff_area_image_write(struct diff_area *da, struct filter *tracker, struct cbt_map *cbt,
			  const void *buf, uint64_t count, uint64_t offset);

/* The image's allocation map: a block in the storage is data; any other
 * block is still the origin's, and has the origin's allocation. */
int diff_area_image_extents(struct diff_area *da, struct filter *tracker, uint64_t count, uint64_t offset,
			    uint32_t flags, struct extents *e);

/* Wait until every copy queued for the storage is stored (an image's flush
 * needs it before the storage's). */
void diff_area_drain(struct diff_area *da);
/* 0, or the sticky error that corrupted the image (-ENOSPC, -EIO). */
int diff_area_error(struct diff_area *da);
/* The snapshot is gone: image I/O fails from now on. */
void diff_area_detach(struct diff_area *da);
bool diff_area_detached(struct diff_area *da);
uint64_t diff_area_capacity(struct diff_area *da);
struct device *diff_area_origin(struct diff_area *da);
struct diff_storage *diff_area_storage(struct diff_area *da);
/* Chunks that have room in the storage so far (touched by a write). */
uint64_t diff_area_copied(struct diff_area *da);

#endif
