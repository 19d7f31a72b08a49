/* cbt_store: the CBT map's state file (DIR/NAME.cbt with --state-dir; the
 * format is docs/cbt-state.md). It owns the format (encode, decode, and the
 * checks a file must pass to be adopted) and the crash-safe ways to change the
 * file: a temporary file, fsync, rename, fsync of the directory. It knows
 * nothing of devices or filters: the tracker decides when to load, mark in use
 * (save without CLEAN), save CLEAN and remove. */
#ifndef BDF_BLKSNAP_CBT_STORE_H
#define BDF_BLKSNAP_CBT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cbt_map;
struct params;

#define CBT_STORE_MAGIC "BDF-CBT\n" /* 8 bytes, no NUL */
#define CBT_STORE_VERSION 1u
#define CBT_STORE_HEADER_SIZE 64u
#define CBT_STORE_FLAG_CLEAN 0x1u
/* A checkpoint taken while the tracker runs, with a write-intent log
 * (DIR/NAME.wil) marking every region written since: after a crash the two
 * together are a superset of the true map. */
#define CBT_STORE_FLAG_LOGGED 0x2u

/* What a load found. CBT_STORE_OK and CBT_STORE_CHECKPOINT give a map; every
 * other verdict means a new map with a new generation. */
enum cbt_store_verdict {
	CBT_STORE_OK = 0,
	CBT_STORE_MISSING,     /* no file */
	CBT_STORE_UNREADABLE,  /* it could not be read (logged) */
	CBT_STORE_SHORT,       /* shorter than a header, or than its header says */
	CBT_STORE_LONG,        /* longer than its header says */
	CBT_STORE_BAD_MAGIC,
	CBT_STORE_BAD_VERSION,
	CBT_STORE_CHECKSUM,
	CBT_STORE_INVALID,     /* fields no map has: unknown flags, active number 0... */
	CBT_STORE_NOT_CLEAN,   /* the daemon did not stop cleanly, and nothing logged its writes */
	CBT_STORE_CAPACITY,    /* made for another device capacity */
	CBT_STORE_GEOMETRY,    /* block size or count differ from the parameters' */
	CBT_STORE_CHECKPOINT,  /* a checkpoint (LOGGED, not CLEAN): good with its write-intent log */
};

/* Why a verdict refuses the file, for the log. */
const char *cbt_store_verdict_str(enum cbt_store_verdict v);

/* DIR/NAME.cbt, malloc'd; NULL if out of memory. */
char *cbt_store_path(const char *dir, const char *name);
/* DIR/NAME.wil, the write-intent log beside it. */
char *cbt_store_wil_path(const char *dir, const char *name);

/* The file's bytes for map M (header, read map, write map), with FLAGS
 * (CBT_STORE_FLAG_CLEAN, CBT_STORE_FLAG_LOGGED).
 * *BUF is malloc'd. 0 or -ENOMEM. M's lock is taken while its maps are read. */
int cbt_store_encode(struct cbt_map *m, unsigned flags, uint8_t **buf, size_t *len);
/* The checks in the order of docs/cbt-state.md; on CBT_STORE_OK or
 * CBT_STORE_CHECKPOINT, *OUT is a new
 * map of CAPACITY bytes with the file's generation, numbers and maps. A
 * verdict (>= 0) or -ENOMEM. */
int cbt_store_decode(const uint8_t *buf, size_t len, uint64_t capacity, const struct params *p,
		     struct cbt_map **out);

/* Read and decode PATH: a verdict (>= 0) or -ENOMEM. Read errors are logged
 * and give CBT_STORE_UNREADABLE. */
int cbt_store_load(const char *path, uint64_t capacity, const struct params *p, struct cbt_map **out);
/* Replace PATH with M's state, atomically and durably: PATH.tmp is written,
 * fsynced, renamed over PATH, and the directory fsynced. On failure PATH is
 * what it was (PATH.tmp is removed). 0 or a negative errno, logged here. */
int cbt_store_save(const char *path, struct cbt_map *m, unsigned flags);
/* Remove PATH (none is fine) and fsync the directory. 0 or -errno, logged. */
int cbt_store_remove(const char *path);

/* --state-dir: make DIR (mode 0700) if it is missing, check that it is a
 * directory we can write, lock it (flock) against a second daemon, and give
 * its absolute path in *ABS (malloc'd: the daemon chdirs to / when it
 * daemonizes) and the descriptor holding the lock in *LOCK_FD (close it at
 * exit). 0 or -errno (-EBUSY: locked by another), logged here. */
int cbt_store_dir_prepare(const char *dir, char **abs, int *lock_fd);

#endif
