/* Unit tests: finding the filesystems to freeze (common/fsfreeze.c) in a made-up
 * /sys/block and mountinfo: loop devices by backing file, their partitions,
 * one entry per filesystem however often it is mounted, escaped mount points. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/fsfreeze.h"

static char root[64];

static void put(const char *rel, const char *text)
{
	char path[256], dir[256], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	for (slash = dir + strlen(root) + 1; (slash = strchr(slash, '/')); slash++) {
		*slash = '\0';
		mkdir(dir, 0755);
		*slash = '/';
	}
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/bdf-fsfreeze.XXXXXX");
	assert_non_null(mkdtemp(root));
	/* loop0 over the FUSE file a; loop1 over b with a partition; loop2 over
	 * something else; loop3 unbound */
	put("block/loop0/dev", "7:0\n");
	put("block/loop0/loop/backing_file", "/run/bdf/fuse/a\n");
	put("block/loop1/dev", "7:1\n");
	put("block/loop1/loop/backing_file", "/run/bdf/fuse/b\n");
	put("block/loop1/loop1p1/dev", "259:0\n");
	put("block/loop2/dev", "7:2\n");
	put("block/loop2/loop/backing_file", "/var/other.img\n");
	put("block/loop3/dev", "7:3\n");
	put("block/sda/dev", "8:0\n");
	put("mountinfo",
	    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	    "40 22 7:0 / /mnt/a\\040space rw,relatime shared:2 - ext4 /dev/loop0 rw\n"
	    "41 22 7:0 /sub /mnt/a-bind rw,relatime shared:2 - ext4 /dev/loop0 rw\n"
	    "42 22 259:0 / /mnt/b1 rw,relatime shared:3 - xfs /dev/loop1p1 rw\n"
	    "43 22 7:2 / /mnt/other rw,relatime shared:4 - ext4 /dev/loop2 rw\n"
	    "44 22 0:50 / /run/bdf/fuse rw - fuse.bdfilter bdfilter rw\n"
	    "malformed\n");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : -1;
}

static void finds_mounts_of_matching_loops(void **state)
{
	const char *files[] = { "/run/bdf/fuse/a", "/run/bdf/fuse/b" };
	struct fsfreeze ff = { NULL, 0 };
	char sys[128], mi[128];

	snprintf(sys, sizeof(sys), "%s/block", root);
	snprintf(mi, sizeof(mi), "%s/mountinfo", root);
	assert_int_equal(fsfreeze_find(&ff, sys, mi, files, 2), 0);
	assert_int_equal(ff.n, 2);
	assert_string_equal(ff.fs[0].mountpoint, "/mnt/a space");
	assert_int_equal(ff.fs[0].major, 7);
	assert_int_equal(ff.fs[0].minor, 0);
	assert_int_equal(ff.fs[0].fd, -1);
	assert_string_equal(ff.fs[1].mountpoint, "/mnt/b1");
	assert_int_equal(ff.fs[1].major, 259);
	fsfreeze_free(&ff);
	assert_int_equal(ff.n, 0);
}

static void nothing_for_other_files(void **state)
{
	const char *files[] = { "/run/bdf/fuse/c", "/run/bdf/fuse/a-image" };
	struct fsfreeze ff = { NULL, 0 };
	char sys[128], mi[128];

	snprintf(sys, sizeof(sys), "%s/block", root);
	snprintf(mi, sizeof(mi), "%s/mountinfo", root);
	assert_int_equal(fsfreeze_find(&ff, sys, mi, files, 2), 0);
	assert_int_equal(ff.n, 0);
	assert_int_equal(fsfreeze_freeze(&ff), 0);
	fsfreeze_free(&ff);
	/* no /sys/block at all: nothing to freeze, not an error */
	assert_int_equal(fsfreeze_find(&ff, "/nonexistent/block", mi, files, 2), 0);
	assert_int_equal(ff.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(finds_mounts_of_matching_loops),
		cmocka_unit_test(nothing_for_other_files),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
