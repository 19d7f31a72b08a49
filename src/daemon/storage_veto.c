/* The daemon's own stores, kept out of difference storage (see storage_veto.h). */
#include "daemon/storage_veto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/store_id.h"

/* Is a file id of IDS on the file system mounted at DIR (the FUSE export)? */
static bool on_mount(const struct store_id *ids, size_t n, const char *dir)
{
	struct stat st;

	if (stat(dir, &st) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (ids[i].kind == STORE_FILE && ids[i].dev == st.st_dev)
			return true;
	return false;
}

/* Is a file id of IDS one of the files in DIR? */
static bool in_dir(const struct store_id *ids, size_t n, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool found = false;

	if (!d)
		return false;
	while (!found && (de = readdir(d))) {
		struct stat st;

		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		for (size_t i = 0; i < n && !found; i++)
			found = ids[i].kind == STORE_FILE && ids[i].dev == st.st_dev && ids[i].ino == st.st_ino;
	}
	closedir(d);
	return found;
}

int storage_veto_check(void *opaque, const struct store_id *ids, size_t n, const char *path, char *err,
		       size_t errlen)
{
	const struct storage_veto *v = opaque;

	if (v->fuse_dir && on_mount(ids, n, v->fuse_dir)) {
		snprintf(err, errlen, "%.255s is a file of the FUSE export %s: a snapshot cannot keep its copies "
			 "on a device of this daemon", path, v->fuse_dir);
		return -EINVAL;
	}
	if (v->state_dir && in_dir(ids, n, v->state_dir)) {
		snprintf(err, errlen, "%.255s is a file of the state directory %s", path, v->state_dir);
		return -EINVAL;
	}
	return 0;
}
