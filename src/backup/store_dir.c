/* The object store in a local directory: one regular file per object, a key's
 * slashes made subdirectories. A put writes a temporary file (its name starts
 * with a dot, so no key and no listing ever sees it), fsyncs it, renames it
 * into place and fsyncs the directory: an object is there whole or not at all.
 * (put_nosync leaves the fsyncs to one syncfs(2) at sync.) Nothing is opened
 * through a symbolic link or read unless it is a regular
 * file, so a repository cannot be made to reach outside itself or to hang on
 * a FIFO. The lock is flock(2) on two files (store.h's modes):
 *   READ:   shared "lock"
 *   APPEND: shared "lock" and exclusive "lock.append"
 *   PRUNE:  exclusive "lock" */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/store.h"
#include "backup/util.h"
#include "common/io.h"

struct store_dir {
	struct store s;
	int dirfd;
	int lockfd, appendfd;
};

static atomic_uint tmp_counter;

static struct store_dir *sd_of(struct store *s)
{
	return (struct store_dir *)s;
}

static int check_key(struct store *s, const char *key)
{
	if (!store_key_valid(key)) {
		bk_error("%s: '%s' is not an object name", s->url, key);
		return -EINVAL;
	}
	return 0;
}

/* The directory holding KEY's file, opened (made with MAKE), and the file's
 * name in it. */
static int open_parent(struct store_dir *sd, const char *key, bool make, const char **base)
{
	const char *slash = strrchr(key, '/');
	int fd = dup(sd->dirfd);
	const char *p = key;

	*base = slash ? slash + 1 : key;
	if (fd < 0)
		return -errno;
	while (slash && p < slash) {
		char comp[NAME_MAX + 1];
		const char *end = strchr(p, '/');
		size_t len = (size_t)(end - p);
		int next;

		if (len > NAME_MAX) {
			close(fd);
			return -ENAMETOOLONG;
		}
		memcpy(comp, p, len);
		comp[len] = 0;
		next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0 && errno == ENOENT && make) {
			if (mkdirat(fd, comp, 0755) < 0 && errno != EEXIST) {
				int e = -errno;

				close(fd);
				return e;
			}
			next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (next < 0) {
			int e = errno == ENOTDIR || errno == ELOOP ? -ENOENT : -errno;

			close(fd);
			return e;
		}
		close(fd);
		fd = next;
		p = end + 1;
	}
	return fd;
}

/* KEY's file, open for reading, and its size; -ENOENT if absent, -EINVAL if
 * not a regular file. */
static int open_object(struct store_dir *sd, const char *key, uint64_t *size)
{
	const char *base;
	int dfd = open_parent(sd, key, false, &base), fd;
	struct stat st;

	if (dfd < 0)
		return dfd;
	fd = openat(dfd, base, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	close(dfd);
	if (fd < 0)
		return errno == ELOOP ? -EINVAL : -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	*size = (uint64_t)st.st_size;
	return fd;
}

static int object_error(struct store *s, const char *key, int e)
{
	if (e == -EINVAL)
		bk_error("%s: %s: not a regular file", s->url, key);
	else if (e != -ENOENT)
		bk_error("%s: %s: %s", s->url, key, strerror(-e));
	return e == -EINVAL ? -EIO : e;
}

static int sd_get(struct store *s, const char *key, void **buf, size_t *len)
{
	uint64_t size;
	ssize_t got;
	char *p;
	int fd, e;

	if ((e = check_key(s, key)) < 0)
		return e;
	if ((fd = open_object(sd_of(s), key, &size)) < 0)
		return object_error(s, key, fd);
	if (size > SIZE_MAX - 1 || !(p = malloc(size ? size : 1))) {
		close(fd);
		bk_error("out of memory");
		return -ENOMEM;
	}
	got = io_pread_all(fd, p, size, 0);
	close(fd);
	if (got < 0 || (uint64_t)got != size) {
		free(p);
		bk_error("%s: %s: %s", s->url, key, got < 0 ? strerror((int)-got) : "changed while read");
		return -EIO;
	}
	*buf = p;
	*len = size;
	return 0;
}

static int sd_get_range(struct store *s, const char *key, uint64_t offset, size_t len, void *buf)
{
	uint64_t size;
	ssize_t got;
	int fd, e;

	if ((e = check_key(s, key)) < 0)
		return e;
	if ((fd = open_object(sd_of(s), key, &size)) < 0)
		return object_error(s, key, fd);
	got = io_pread_all(fd, buf, len, offset);
	close(fd);
	if (got < 0 || (size_t)got != len) {
		bk_error("%s: %s: %s reading %zu bytes at %llu", s->url, key,
			 got < 0 ? strerror((int)-got) : "too short", len, (unsigned long long)offset);
		return -EIO;
	}
	return 0;
}

/* Write KEY: a temporary file renamed into place; with SYNC, the file and
 * its directory fsynced (else sd_sync does it for all at once). */
static int dir_put(struct store *s, const char *key, const void *buf, size_t len, bool sync)
{
	struct store_dir *sd = sd_of(s);
	char tmp[64];
	const char *base;
	int dfd, fd, e;

	if ((e = check_key(s, key)) < 0)
		return e;
	if ((dfd = open_parent(sd, key, true, &base)) < 0) {
		bk_error("%s: %s: %s", s->url, key, strerror(-dfd));
		return dfd;
	}
	snprintf(tmp, sizeof(tmp), ".tmp-%d-%u", (int)getpid(), atomic_fetch_add(&tmp_counter, 1));
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		e = -errno;
		goto fail;
	}
	/* Large aligned objects (packs) go around the page cache: copying
	 * 16 MiB pieces into it from three threads cost more CPU than the
	 * rest of the backup. */
	if (!sync && io_direct_aligned(buf, len, 0) && len >= IO_DIRECT_MIN) {
		int dfd2 = io_reopen_direct(fd);

		e = io_pwrite_direct(fd, dfd2, buf, len, 0);
		if (dfd2 >= 0)
			close(dfd2);
	} else {
		e = io_pwrite_all(fd, buf, len, 0, 0);
	}
	if (e < 0 || (sync && fsync(fd) < 0 && (e = -errno))) {
		close(fd);
		unlinkat(dfd, tmp, 0);
		goto fail;
	}
	close(fd);
	if (renameat(dfd, tmp, dfd, base) < 0) {
		e = -errno;
		unlinkat(dfd, tmp, 0);
		goto fail;
	}
	if (sync && fsync(dfd) < 0) {
		e = -errno;
		goto fail;
	}
	close(dfd);
	return 0;
fail:
	close(dfd);
	bk_error("%s: writing %s: %s", s->url, key, strerror(-e));
	return e;
}

static int sd_put(struct store *s, const char *key, const void *buf, size_t len)
{
	return dir_put(s, key, buf, len, true);
}

static int sd_put_nosync(struct store *s, const char *key, const void *buf, size_t len)
{
	return dir_put(s, key, buf, len, false);
}

/* One syncfs(2) for every file and directory written without a sync: far
 * cheaper on a busy disk than an fsync per 16 MiB pack. */
static int sd_sync(struct store *s)
{
	if (syncfs(sd_of(s)->dirfd) < 0) {
		int e = -errno;

		bk_error("%s: syncfs: %s", s->url, strerror(-e));
		return e;
	}
	return 0;
}

static int sd_del(struct store *s, const char *key)
{
	const char *base;
	int dfd, e;

	if ((e = check_key(s, key)) < 0)
		return e;
	if ((dfd = open_parent(sd_of(s), key, false, &base)) < 0)
		return dfd == -ENOENT ? 0 : object_error(s, key, dfd);
	if (unlinkat(dfd, base, 0) < 0 && errno != ENOENT) {
		e = -errno;
		close(dfd);
		bk_error("%s: removing %s: %s", s->url, key, strerror(-e));
		return e;
	}
	/* The removal is durable before whatever the caller does next. */
	fsync(dfd);
	close(dfd);
	return 0;
}

/* Walk DFD (the directory of PATH, "" at the top), reporting the regular
 * files under it whose keys start with PREFIX. */
static int list_dir(struct store *s, int dfd, char *path, size_t plen, const char *prefix, store_list_fn fn,
		    void *opaque)
{
	DIR *d = fdopendir(dfd);
	struct dirent *de;
	int r = 0;

	if (!d) {
		close(dfd);
		return -errno;
	}
	while (r == 0 && (de = readdir(d))) {
		size_t nlen = strlen(de->d_name);
		struct stat st;

		if (de->d_name[0] == '.' || plen + nlen + 2 > PATH_MAX)
			continue;
		memcpy(path + plen, de->d_name, nlen + 1);
		/* Prune directories the prefix rules out. */
		if (strncmp(path, prefix, plen + nlen < strlen(prefix) ? plen + nlen : strlen(prefix)) != 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub < 0)
				continue;
			path[plen + nlen] = '/';
			path[plen + nlen + 1] = 0;
			r = list_dir(s, sub, path, plen + nlen + 1, prefix, fn, opaque);
		} else if (S_ISREG(st.st_mode) && strncmp(path, prefix, strlen(prefix)) == 0 &&
			   store_key_valid(path)) {
			r = fn(opaque, path, (uint64_t)st.st_size);
		}
	}
	closedir(d);
	return r;
}

static int sd_list(struct store *s, const char *prefix, store_list_fn fn, void *opaque)
{
	char path[PATH_MAX];
	/* A new open, not dup(2): a duplicate shares the directory's offset,
	 * and the next listing would start where this one ended. */
	int fd = openat(sd_of(s)->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	path[0] = 0;
	r = list_dir(s, fd, path, 0, prefix, fn, opaque);
	if (r < 0 && r != -ENOENT)
		bk_error("%s: listing: %s", s->url, strerror(-r));
	return r;
}

static int lock_file(struct store_dir *sd, const char *name, int *fdp, int op)
{
	if (*fdp < 0) {
		int fd = openat(sd->dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);

		if (fd < 0) {
			int e = -errno;

			bk_error("%s: %s: %s", sd->s.url, name, e == -ELOOP ? "a symbolic link" : strerror(-e));
			return e;
		}
		*fdp = fd;
	}
	if (flock(*fdp, op | LOCK_NB) < 0)
		return -errno;
	return 0;
}

static void sd_unlock(struct store *s)
{
	struct store_dir *sd = sd_of(s);

	if (sd->appendfd >= 0)
		close(sd->appendfd);
	if (sd->lockfd >= 0)
		close(sd->lockfd);
	sd->appendfd = sd->lockfd = -1;
}

static int sd_lock(struct store *s, enum store_lock_mode mode)
{
	struct store_dir *sd = sd_of(s);
	int e;

	e = lock_file(sd, "lock", &sd->lockfd, mode == STORE_LOCK_PRUNE ? LOCK_EX : LOCK_SH);
	if (e == -EWOULDBLOCK) {
		bk_error("%s is in use: %s", s->url,
			 mode == STORE_LOCK_PRUNE ? "another command is reading or writing it"
						  : "a prune is removing backups from it");
		e = -EBUSY;
	}
	if (e == 0 && mode == STORE_LOCK_APPEND) {
		e = lock_file(sd, "lock.append", &sd->appendfd, LOCK_EX);
		if (e == -EWOULDBLOCK) {
			bk_error("%s is in use: another backup is being written to it", s->url);
			e = -EBUSY;
		}
	}
	if (e < 0)
		sd_unlock(s);
	return e;
}

static void sd_close(struct store *s)
{
	struct store_dir *sd = sd_of(s);

	sd_unlock(s);
	close(sd->dirfd);
	free(s->url);
	free(sd);
}

static const struct store_ops store_dir_ops = {
	.get = sd_get,
	.get_range = sd_get_range,
	.put = sd_put,
	.put_nosync = sd_put_nosync,
	.sync = sd_sync,
	.del = sd_del,
	.list = sd_list,
	.lock = sd_lock,
	.unlock = sd_unlock,
	.close = sd_close,
};

int store_dir_open(const char *path, bool create, struct store **out)
{
	struct store_dir *sd = calloc(1, sizeof(*sd));
	int e;

	if (!sd || !(sd->s.url = strdup(path))) {
		free(sd);
		bk_error("out of memory");
		return -ENOMEM;
	}
	if (create && mkdir(path, 0755) < 0 && errno != EEXIST) {
		e = -errno;
		bk_error("%s: %s", path, strerror(-e));
		goto fail;
	}
	sd->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sd->dirfd < 0) {
		e = -errno;
		bk_error("%s: %s", path, e == -ENOTDIR ? "not a directory" : strerror(-e));
		goto fail;
	}
	sd->lockfd = sd->appendfd = -1;
	sd->s.ops = &store_dir_ops;
	*out = &sd->s;
	return 0;
fail:
	free(sd->s.url);
	free(sd);
	return e;
}
