/* Where a store's bytes live, so that two stores that share bytes can be
 * told apart from two that do not, whatever path names them: a regular file
 * (by st_dev and st_ino: symlinks and hard links are the same file), or a
 * whole block device (by st_rdev: a partition is its disk from the
 * partition's start). A loop device has both: its own, and its backing file
 * from the loop's offset. */
#ifndef BDF_CORE_STORE_ID_H
#define BDF_CORE_STORE_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

enum store_kind { STORE_FILE, STORE_DISK };

struct store_id {
	enum store_kind kind;
	dev_t dev; /* STORE_FILE: st_dev; STORE_DISK: the whole disk's st_rdev */
	ino_t ino; /* STORE_FILE only */
	uint64_t offset; /* where byte 0 of the store is, in that file or disk */
};

#define STORE_IDS_MAX 2

/* Bytes [offset, offset+len) of a store. */
struct byte_range {
	uint64_t offset, len;
};

/* The ids of the open file or block device FD (ST is its fstat): 1 or 2 of
 * them in IDS, *N the count. -EINVAL for anything else. What sysfs cannot
 * tell (a loop device's backing file gone, sysfs not mounted) is left out:
 * the device's own id is always there. */
int store_ids_of(int fd, const struct stat *st, struct store_id ids[STORE_IDS_MAX], size_t *n);

/* The same for PATH (opened read-only for a moment); -errno. */
int store_ids_of_path(const char *path, struct store_id ids[STORE_IDS_MAX], size_t *n);

/* Do [aoff, aoff+alen) of a store with ids A and [boff, boff+blen) of one
 * with ids B share a byte? */
bool store_ids_overlap(const struct store_id *a, size_t na, uint64_t aoff, uint64_t alen,
		       const struct store_id *b, size_t nb, uint64_t boff, uint64_t blen);

#endif
