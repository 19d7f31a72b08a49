/* The FUSE export: a directory with one regular file per device, sized to the
 * device, so that losetup makes a kernel block device of it (and mkfs, mount,
 * FIFREEZE work on that). Files appear and go as devices are added to and
 * removed from the registry (the daemon wires fuse_export_add/remove to a
 * registry observer). core/ knows nothing of this. */
#ifndef BDF_FUSE_EXPORT_H
#define BDF_FUSE_EXPORT_H

struct device;
struct fuse_export;

struct fuse_export_config {
	const char *dir;   /* the mount point; made (mode 0755) if missing */
	unsigned threads;  /* request workers */
	unsigned grace_ms; /* shutdown: how long a busy mount is waited for */
	/* Called once, on a worker, when the directory is unmounted from
	 * outside (umount, fusermount3 -u); NULL: a warning is logged instead
	 * (the daemon goes on serving NBD). */
	void (*unmounted)(void *opaque);
	void *opaque;
};

/* Mount CFG->dir. No request is served until fuse_export_start(), so a daemon
 * can mount before it forks (and report a bad directory on its terminal) and
 * start its threads after. Errors are logged here. */
int fuse_export_new(const struct fuse_export_config *cfg, struct fuse_export **out);
int fuse_export_start(struct fuse_export *fx);
/* The mount point as an absolute path without symlinks (what the kernel
 * reports as a loop device's backing file). */
const char *fuse_export_dir(const struct fuse_export *fx);

/* Serve DEV as the file named after it (the file holds a reference on DEV
 * while it is listed or open). -EEXIST if the name is listed. */
int fuse_export_add(struct fuse_export *fx, struct device *dev);
/* The file leaves the directory at once. Handles still open on it (a loop
 * device) get EIO from then on; DEV is released when the last one closes. */
void fuse_export_remove(struct fuse_export *fx, const char *name);

/* Unmount and stop the workers. A mount kept busy (a loop device attached)
 * is waited for up to grace_ms; then it is detached lazily and the FUSE
 * connection is cut, so the holders get errors instead of hanging. Every
 * request answered before was answered after the device did it. */
void fuse_export_shutdown(struct fuse_export *fx);
/* Shuts down if needed, drops every device reference, frees. */
void fuse_export_free(struct fuse_export *fx);

#endif
