/* Finding, freezing and thawing the filesystems on loop devices over given
 * files (see fsfreeze.h). */
#include "common/fsfreeze.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/log.h"

struct devnum {
	unsigned major, minor;
};

struct devset {
	struct devnum *v;
	size_t n;
};

/* The first line of a small file, without its newline; -1 if unreadable. */
static int read_line(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");
	size_t len;

	if (!f)
		return -1;
	if (!fgets(buf, (int)size, f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	len = strlen(buf);
	if (len > 0 && buf[len - 1] == '\n')
		buf[len - 1] = '\0';
	return 0;
}

static int devset_add_file(struct devset *s, const char *dev_path)
{
	char line[64];
	struct devnum d, *v;

	if (read_line(dev_path, line, sizeof(line)) < 0 || sscanf(line, "%u:%u", &d.major, &d.minor) != 2)
		return 0; /* gone meanwhile */
	v = realloc(s->v, (s->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	v[s->n++] = d;
	s->v = v;
	return 0;
}

/* LOOP (a /sys/block entry) and its partitions. */
static int devset_add_loop(struct devset *s, const char *sys_block, const char *loop)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *dir;
	int r;

	snprintf(path, sizeof(path), "%s/%s/dev", sys_block, loop);
	r = devset_add_file(s, path);
	snprintf(path, sizeof(path), "%s/%s", sys_block, loop);
	dir = opendir(path);
	if (!dir)
		return r;
	while (r == 0 && (de = readdir(dir))) {
		if (strncmp(de->d_name, loop, strlen(loop)) != 0 || strcmp(de->d_name, loop) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s/%s/dev", sys_block, loop, de->d_name);
		r = devset_add_file(s, path);
	}
	closedir(dir);
	return r;
}

static int find_loops(struct devset *s, const char *sys_block, const char *const *files, size_t n_files)
{
	struct dirent *de;
	DIR *dir = opendir(sys_block);
	int r = 0;

	if (!dir)
		return errno == ENOENT ? 0 : -errno;
	while (r == 0 && (de = readdir(dir))) {
		char path[PATH_MAX], backing[PATH_MAX];

		if (strncmp(de->d_name, "loop", 4) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s/loop/backing_file", sys_block, de->d_name);
		if (read_line(path, backing, sizeof(backing)) < 0)
			continue; /* not bound */
		for (size_t i = 0; i < n_files; i++)
			if (strcmp(backing, files[i]) == 0) {
				r = devset_add_loop(s, sys_block, de->d_name);
				break;
			}
	}
	closedir(dir);
	return r;
}

/* mountinfo escapes ' ', '\t', '\n' and '\\' in octal (\040). */
static void unescape(char *s)
{
	char *out = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
		    s[3] <= '7') {
			*out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

static bool have_fs(const struct fsfreeze *ff, unsigned major, unsigned minor)
{
	for (size_t i = 0; i < ff->n; i++)
		if (ff->fs[i].major == major && ff->fs[i].minor == minor)
			return true;
	return false;
}

static int add_mounts(struct fsfreeze *ff, const char *mountinfo, const struct devset *s)
{
	FILE *f = fopen(mountinfo, "re");
	char *line = NULL;
	size_t cap = 0;
	int r = 0;

	if (!f)
		return -errno;
	while (r == 0 && getline(&line, &cap, f) > 0) {
		/* ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ... */
		char *save = NULL, *field[5];
		unsigned major, minor;
		size_t k;

		for (k = 0; k < 5; k++)
			if (!(field[k] = strtok_r(k ? NULL : line, " \n", &save)))
				break;
		if (k < 5 || sscanf(field[2], "%u:%u", &major, &minor) != 2)
			continue;
		for (size_t i = 0; i < s->n; i++) {
			struct fsfreeze_fs *v;

			if (s->v[i].major != major || s->v[i].minor != minor || have_fs(ff, major, minor))
				continue;
			v = realloc(ff->fs, (ff->n + 1) * sizeof(*v));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			ff->fs = v;
			unescape(field[4]);
			v[ff->n] = (struct fsfreeze_fs){ .mountpoint = strdup(field[4]), .major = major,
							  .minor = minor, .fd = -1 };
			if (!v[ff->n].mountpoint) {
				r = -ENOMEM;
				break;
			}
			ff->n++;
		}
	}
	free(line);
	fclose(f);
	return r;
}

int fsfreeze_find(struct fsfreeze *ff, const char *sys_block, const char *mountinfo, const char *const *files,
		  size_t n_files)
{
	struct devset s = { NULL, 0 };
	int r = find_loops(&s, sys_block, files, n_files);

	if (r == 0 && s.n > 0)
		r = add_mounts(ff, mountinfo, &s);
	free(s.v);
	if (r < 0)
		log_error("looking for filesystems to freeze: %s", strerror(-r));
	return r;
}

size_t fsfreeze_freeze(struct fsfreeze *ff)
{
	size_t frozen = 0;

	for (size_t i = 0; i < ff->n; i++) {
		struct fsfreeze_fs *fs = &ff->fs[i];
		struct stat st;

		fs->fd = open(fs->mountpoint, O_RDONLY | O_NOCTTY | O_CLOEXEC);
		if (fs->fd < 0) {
			log_warn("freeze %s: %s", fs->mountpoint, strerror(errno));
			continue;
		}
		/* The path may now lead to another filesystem (mounted over). */
		if (fstat(fs->fd, &st) < 0 || major(st.st_dev) != fs->major || minor(st.st_dev) != fs->minor) {
			log_warn("freeze %s: no longer the filesystem on %u:%u; not frozen", fs->mountpoint,
				 fs->major, fs->minor);
			continue;
		}
		if (ioctl(fs->fd, FIFREEZE, 0) < 0) {
			if (errno == EBUSY)
				log_info("freeze %s: frozen already; left as it is", fs->mountpoint);
			else
				log_warn("freeze %s: %s; not frozen", fs->mountpoint, strerror(errno));
			continue;
		}
		fs->frozen = true;
		frozen++;
		log_debug("froze %s (%u:%u)", fs->mountpoint, fs->major, fs->minor);
	}
	return frozen;
}

void fsfreeze_thaw(struct fsfreeze *ff)
{
	for (size_t i = 0; i < ff->n; i++) {
		struct fsfreeze_fs *fs = &ff->fs[i];

		if (fs->frozen && ioctl(fs->fd, FITHAW, 0) < 0)
			log_error("thaw %s: %s", fs->mountpoint, strerror(errno));
		fs->frozen = false;
		if (fs->fd >= 0)
			close(fs->fd);
		fs->fd = -1;
	}
}

void fsfreeze_free(struct fsfreeze *ff)
{
	fsfreeze_thaw(ff);
	for (size_t i = 0; i < ff->n; i++)
		free(ff->fs[i].mountpoint);
	free(ff->fs);
	ff->fs = NULL;
	ff->n = 0;
}
