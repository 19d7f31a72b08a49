/* Filesystems mounted on loop devices over given files: found through sysfs
 * (/sys/block/loopN/loop/backing_file, and the loop device's partitions) and
 * /proc/self/mountinfo, frozen with FIFREEZE and thawed with FITHAW. */
#ifndef BDF_COMMON_FSFREEZE_H
#define BDF_COMMON_FSFREEZE_H

#include <stdbool.h>
#include <stddef.h>

struct fsfreeze_fs {
	char *mountpoint;
	unsigned major, minor;
	int fd;      /* held from freeze to thaw: FITHAW goes to the same superblock */
	bool frozen; /* by us: a filesystem someone else froze is left to them */
};

struct fsfreeze {
	struct fsfreeze_fs *fs;
	size_t n;
};

#define FSFREEZE_SYS_BLOCK "/sys/block"
#define FSFREEZE_MOUNTINFO "/proc/self/mountinfo"

/* Fill FF (zeroed by the caller) with one entry per filesystem (one per
 * major:minor) mounted on a loop device, or a partition of one, whose backing
 * file is one of FILES (absolute paths, compared as the kernel prints them).
 * SYS_BLOCK and MOUNTINFO are the paths above, other ones in tests. */
int fsfreeze_find(struct fsfreeze *ff, const char *sys_block, const char *mountinfo, const char *const *files,
		  size_t n_files);
/* Freeze each filesystem; the number frozen. One that cannot be frozen
 * (already frozen, no support, unmounted since) is logged and skipped: the
 * take that follows is crash-consistent for it all the same. */
size_t fsfreeze_freeze(struct fsfreeze *ff);
/* Thaw what fsfreeze_freeze froze. */
void fsfreeze_thaw(struct fsfreeze *ff);
void fsfreeze_free(struct fsfreeze *ff);

#endif
