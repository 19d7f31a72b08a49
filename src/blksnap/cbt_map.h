/* The change-block tracking map, with blksnap's semantics kept exactly:
 * two maps of one byte per block; a write sets write_map[i] = active where it is
 * lower; a take copies the write map to the read map and moves the numbers on.
 * Where we differ: the 255th take starts a new generation numbered from 1 (see
 * cbt_map_switch). */
#ifndef BDF_BLKSNAP_CBT_MAP_H
#define BDF_BLKSNAP_CBT_MAP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uuid/uuid.h>

struct extents;
struct params;

struct cbt_map {
	pthread_mutex_t lock;
	uint64_t device_capacity; /* bytes */
	unsigned blk_size_shift;
	uint64_t blk_count;
	uint8_t *read_map;
	uint8_t *write_map;
	uint8_t snap_number_active;
	uint8_t snap_number_previous;
	uuid_t generation_id;
	bool is_corrupted;
};

/* The block size shift and count blksnap picks for CAPACITY bytes. */
void cbt_map_geometry(const struct params *p, uint64_t capacity, unsigned *shift, uint64_t *count);

int cbt_map_create(struct cbt_map **out, uint64_t capacity, const struct params *p);
void cbt_map_destroy(struct cbt_map *m);
/* New maps for CAPACITY, numbers back to active 1 / previous 0, new generation. */
int cbt_map_reset(struct cbt_map *m, uint64_t capacity, const struct params *p);

/* A write of COUNT bytes at OFFSET: the write map gets the active number.
 * Out of range: the map becomes corrupted, -EINVAL. */
int cbt_map_mark(struct cbt_map *m, uint64_t offset, uint64_t count);
/* cbtdirty and image writes: both maps (write map active, read map previous).
 * Out of range: -EINVAL, and the map stays as it was. */
int cbt_map_mark_both(struct cbt_map *m, uint64_t offset, uint64_t count);
/* The device's size is changing: the map can no longer describe it. It stays
 * as it is (cbtinfo shows it, corrupted) until the next take resets it. */
void cbt_map_set_corrupted(struct cbt_map *m);
/* Snapshot take; the caller has drained the device's writes. CAPACITY is the
 * device's size now: as in blksnap, a corrupted map, or one made for another
 * capacity, is reset first for CAPACITY (new generation); so is a map whose
 * active number would pass 255 (see cbt_map.c). -ENOMEM if a reset could not
 * allocate: the map is then corrupted, and the next take tries again. */
int cbt_map_switch(struct cbt_map *m, uint64_t capacity, const struct params *p);

/* Append to E the blocks of [offset, offset+count) changed after snapshot
 * SINCE (read map above SINCE) as EXTENT_DIRTY, the others as 0. A block that
 * the range cuts counts whole: a changed block is never reported clean. */
int cbt_map_changed(struct cbt_map *m, uint8_t since, uint64_t offset, uint64_t count,
		    struct extents *e);

/* Copy LEN bytes of the read map from byte OFFSET into BUF; the bytes copied. */
uint64_t cbt_map_read(struct cbt_map *m, uint64_t offset, uint64_t len, uint8_t *buf);

#endif
