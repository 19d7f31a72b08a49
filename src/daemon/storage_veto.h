/* The stores bdfilterd uses itself and a snapshot's difference storage must
 * stay off: the FUSE export's files (a device or an image: the copies would
 * go back through the daemon), a loop device on one of them, and the files
 * of the state directory. blksnap calls this for every store appended. */
#ifndef BDF_DAEMON_STORAGE_VETO_H
#define BDF_DAEMON_STORAGE_VETO_H

#include <stddef.h>

struct store_id;

struct storage_veto {
	const char *fuse_dir;  /* the mount point, or NULL */
	const char *state_dir; /* or NULL */
};

/* blksnap's storage_veto (OPAQUE is a struct storage_veto): 0, or -EINVAL
 * with a message naming PATH. */
int storage_veto_check(void *opaque, const struct store_id *ids, size_t n, const char *path, char *err,
		       size_t errlen);

#endif
