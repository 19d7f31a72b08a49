/* The FUSE export's insides, shared by fuse_export.c (the table of files, the
 * registry's side, the session, mount and workers) and fuse_ops.c (the file
 * operations on the devices). */
#ifndef BDF_FUSE_INTERNAL_H
#define BDF_FUSE_INTERNAL_H

#define FUSE_USE_VERSION 35

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct device;

#define ROOT_INO FUSE_ROOT_ID
#define FX_BLOCK 4096u /* st_blksize and statfs f_bsize: loop takes its discard granularity from it */

struct fx_file {
	char *name;
	fuse_ino_t ino;
	/* The device; set to NULL (and put) once the file is removed and no
	 * handle is open, so a removed file does not pin its device while the
	 * kernel caches the inode. Requests only come on open handles, and a
	 * handle cannot close while one of its requests runs. */
	struct device *dev;
	uint64_t size; /* the device's size when it was last seen: see fx_file_size() */
	bool readonly;
	atomic_bool removed;
	uint64_t nlookup; /* the kernel's references (lookup - forget); under fx->lock */
	unsigned nopen;   /* open handles; under fx->lock */
	time_t added;
};

struct fuse_export {
	char *dir;
	unsigned threads, grace_ms;
	void (*unmounted)(void *opaque); /* fuse_export_config's */
	void *opaque;
	struct fuse_session *se;
	int stop_fd;
	pthread_t *workers;
	size_t n_workers;
	bool mounted, shut;
	atomic_bool ended;    /* the session ended: unmounted from outside, or by us */
	atomic_bool stopping; /* workers: finish the request in hand and return */
	time_t mounted_at;

	pthread_mutex_t lock;
	/* Every file the kernel may still name: listed ones and removed ones it
	 * still holds (nlookup or handles). Few entries; scanned linearly. */
	struct fx_file **files;
	size_t n_files;
	fuse_ino_t next_ino;
};

/* The table (under fx->lock). By inode number: also files removed but not
 * forgotten. By name: listed files only. */
struct fx_file *fx_find_ino_locked(struct fuse_export *fx, fuse_ino_t ino);
struct fx_file *fx_find_name_locked(struct fuse_export *fx, const char *name);
/* After a change to F's counts: the device to put (unlocked) once nothing can
 * reach it; F, taken out of the table, in *GONE to free (unlocked) once the
 * kernel has forgotten it too. */
struct device *fx_settle_locked(struct fuse_export *fx, struct fx_file *f, struct fx_file **gone);
void fx_file_free(struct fx_file *f);

extern const struct fuse_lowlevel_ops fx_ops;

#endif
