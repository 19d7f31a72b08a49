/* A snapshot's difference storage: ranges of files or block devices, appended
 * before or while the snapshot is held, seen as one linear space that chunks
 * are allocated from. It keeps blksnap's low_free_space accounting and can
 * grow a sparse file of its own up to a limit. Allocation past the end sets a
 * sticky overflow. */
#ifndef BDF_BLKSNAP_DIFF_STORAGE_H
#define BDF_BLKSNAP_DIFF_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct diff_storage;
struct event_queue;
struct params;
struct sector_range;

int diff_storage_new(const struct params *p, struct event_queue *events, struct diff_storage **out);
void diff_storage_free(struct diff_storage *ds);

/* Self-growing mode: PATH is a file (created if missing) or a directory (an
 * unlinked temporary file in it), grown in diff_storage_minimum steps up to
 * LIMIT bytes. Call before diff_storage_start(). */
int diff_storage_set_growing(struct diff_storage *ds, const char *path, uint64_t limit,
			     char *err, size_t errlen);
/* The first low_free_space event (or, growing, the first step). */
void diff_storage_start(struct diff_storage *ds);

/* Append PATH whole (N == 0) or the sector ranges R. */
int diff_storage_append(struct diff_storage *ds, const char *path, const struct sector_range *r, size_t n,
			char *err, size_t errlen);

/* Room for BYTES in one piece: its linear offset in *VIRT. -ENOSPC when there
 * is none (from then on, always). */
int diff_storage_alloc(struct diff_storage *ds, uint64_t bytes, uint64_t *virt);
int diff_storage_read(struct diff_storage *ds, uint64_t virt, void *buf, uint64_t len);
int diff_storage_write(struct diff_storage *ds, uint64_t virt, const void *buf, uint64_t len);
int diff_storage_flush(struct diff_storage *ds);

struct diff_storage_stats {
	uint64_t capacity, used;      /* bytes */
	uint64_t requested, filled;   /* sectors, blksnap's accounting */
	bool overflow;
};
void diff_storage_stats(struct diff_storage *ds, struct diff_storage_stats *st);

#endif
