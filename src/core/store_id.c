/* Store identities (see store_id.h), read from fstat and sysfs. */
#include "core/store_id.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* The first line of /sys/dev/block/MAJ:MIN/ATTR into BUF; -1 if there is none. */
static int sysfs_attr(dev_t rdev, const char *attr, char *buf, size_t len)
{
	char path[128];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/%s", major(rdev), minor(rdev), attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static int sysfs_u64(dev_t rdev, const char *attr, uint64_t *v)
{
	char buf[64], *end;

	if (sysfs_attr(rdev, attr, buf, sizeof(buf)) < 0)
		return -1;
	errno = 0;
	*v = strtoull(buf, &end, 10);
	return errno || end == buf ? -1 : 0;
}

/* A partition: its disk's rdev and its start in bytes. */
static bool partition_of(dev_t rdev, dev_t *disk, uint64_t *start)
{
	char buf[64];
	unsigned ma, mi;
	uint64_t sectors;

	if (sysfs_attr(rdev, "partition", buf, sizeof(buf)) < 0)
		return false;
	if (sysfs_u64(rdev, "start", &sectors) < 0 || sysfs_attr(rdev, "../dev", buf, sizeof(buf)) < 0 ||
	    sscanf(buf, "%u:%u", &ma, &mi) != 2)
		return false;
	*disk = makedev(ma, mi);
	*start = sectors * 512;
	return true;
}

/* A bound loop device: its backing file's id. */
static bool loop_backing(dev_t rdev, struct store_id *id)
{
	char path[PATH_MAX];
	struct stat st;
	uint64_t offset;

	if (sysfs_attr(rdev, "loop/backing_file", path, sizeof(path)) < 0 ||
	    sysfs_u64(rdev, "loop/offset", &offset) < 0 || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return false;
	*id = (struct store_id){ .kind = STORE_FILE, .dev = st.st_dev, .ino = st.st_ino, .offset = offset };
	return true;
}

int store_ids_of(int fd, const struct stat *st, struct store_id ids[STORE_IDS_MAX], size_t *n)
{
	(void)fd;
	*n = 0;
	if (S_ISREG(st->st_mode)) {
		ids[(*n)++] = (struct store_id){ .kind = STORE_FILE, .dev = st->st_dev, .ino = st->st_ino };
		return 0;
	}
	if (!S_ISBLK(st->st_mode))
		return -EINVAL;
	ids[*n] = (struct store_id){ .kind = STORE_DISK, .dev = st->st_rdev };
	partition_of(st->st_rdev, &ids[*n].dev, &ids[*n].offset);
	(*n)++;
	if (loop_backing(st->st_rdev, &ids[*n]))
		(*n)++;
	return 0;
}

int store_ids_of_path(const char *path, struct store_id ids[STORE_IDS_MAX], size_t *n)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = fstat(fd, &st) < 0 ? -errno : store_ids_of(fd, &st, ids, n);
	close(fd);
	return r;
}

static bool same_place(const struct store_id *a, const struct store_id *b)
{
	return a->kind == b->kind && a->dev == b->dev && (a->kind == STORE_DISK || a->ino == b->ino);
}

bool store_ids_overlap(const struct store_id *a, size_t na, uint64_t aoff, uint64_t alen,
		       const struct store_id *b, size_t nb, uint64_t boff, uint64_t blen)
{
	if (alen == 0 || blen == 0)
		return false;
	for (size_t i = 0; i < na; i++)
		for (size_t j = 0; j < nb; j++) {
			uint64_t as, bs;

			if (!same_place(&a[i], &b[j]))
				continue;
			as = a[i].offset + aoff;
			bs = b[j].offset + boff;
			/* [as, as+alen) and [bs, bs+blen) meet, written without overflow */
			if (as < bs ? bs - as < alen : as - bs < blen)
				return true;
		}
	return false;
}
