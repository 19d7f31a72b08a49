/* A snapshot's difference storage: ranges of files or block devices, appended
 * before or while the snapshot is held, seen as one linear space that chunks
 * are allocated from. It keeps blksnap's low_free_space accounting and can
 * grow a file of its own up to a limit. Allocation past the end sets a sticky
 * overflow. Its stores are backing stores (core/backing.h), so a test can
 * give it one that pauses or fails. */
#ifndef BDF_BLKSNAP_DIFF_STORAGE_H
#define BDF_BLKSNAP_DIFF_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct backing;
struct byte_range;
struct diff_storage;
struct event_queue;
struct params;
struct sector_range;
struct store_id;

int diff_storage_new(const struct params *p, struct event_queue *events, struct diff_storage **out);
void diff_storage_free(struct diff_storage *ds);

/* A store about to be appended: opened and identified, in no storage yet. */
struct ds_file;
/* PATH, an existing regular file or block device, read and written. */
int ds_file_open(const char *path, struct ds_file **out, char *err, size_t errlen);
/* For the self-growing storage: PATH a file (made if missing) or a directory
 * (an unlinked temporary file in it). */
int ds_file_create(const char *path, struct ds_file **out, char *err, size_t errlen);
/* A store made elsewhere (a test's), taken. */
int ds_file_wrap(struct backing *b, struct ds_file **out);
void ds_file_free(struct ds_file *f);
/* Its size in bytes (whole sectors), and its ids (none for a custom store). */
uint64_t ds_file_size(const struct ds_file *f);
size_t ds_file_ids(const struct ds_file *f, const struct store_id **ids);

/* The byte ranges of F that appending it with the sector ranges R (all of it
 * if N is 0) would use, into OUT (N or 1 of them). -EINVAL, with a message,
 * if a range is empty, lies outside F, or overlaps another of R; or if F is
 * empty. */
int ds_file_ranges(const struct ds_file *f, const struct sector_range *r, size_t n, struct byte_range *out,
		   char *err, size_t errlen);
/* Append F (taken, also on failure) with the byte ranges R (from
 * ds_file_ranges). -ENOMEM is the only failure. */
int diff_storage_append(struct diff_storage *ds, struct ds_file *f, const struct byte_range *r, size_t n);

/* Self-growing mode: F (taken, also on failure) is used from its start, its
 * space first, then grown in diff_storage_minimum steps up to LIMIT bytes (or
 * its size, if larger). Call before diff_storage_start(). */
int diff_storage_set_growing(struct diff_storage *ds, struct ds_file *f, uint64_t limit);
/* The first low_free_space event (or, growing, the first step if the file's
 * own space is short). */
void diff_storage_start(struct diff_storage *ds);

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
