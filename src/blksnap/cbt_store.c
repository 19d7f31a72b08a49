/* The CBT state file (see cbt_store.h and docs/cbt-state.md). */
#include "blksnap/cbt_store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/bytes.h"
#include "common/fault.h"
#include "common/io.h"
#include "common/lock_order.h"
#include "common/log.h"
#include "blksnap/cbt_map.h"
#include "blksnap/params.h"

/* The header's fields, by offset (little-endian). */
enum {
	OFF_MAGIC = 0,      /* 8 bytes */
	OFF_VERSION = 8,    /* u32 */
	OFF_FLAGS = 12,     /* u32 */
	OFF_CAPACITY = 16,  /* u64, bytes */
	OFF_SHIFT = 24,     /* u32 */
	OFF_RESERVED1 = 28, /* u32, 0 */
	OFF_COUNT = 32,     /* u64 */
	OFF_GENERATION = 40, /* 16 bytes */
	OFF_ACTIVE = 56,    /* u8 */
	OFF_PREVIOUS = 57,  /* u8 */
	OFF_CORRUPTED = 58, /* u8, 0 or 1 */
	OFF_RESERVED2 = 59, /* u8, 0 */
	OFF_CHECKSUM = 60,  /* u32: CRC-32 of bytes 0..59, the read map, the write map */
};

const char *cbt_store_verdict_str(enum cbt_store_verdict v)
{
	switch (v) {
	case CBT_STORE_OK: return "loaded";
	case CBT_STORE_MISSING: return "no saved map";
	case CBT_STORE_UNREADABLE: return "the file cannot be read";
	case CBT_STORE_SHORT: return "the file is truncated";
	case CBT_STORE_LONG: return "the file is longer than its header says";
	case CBT_STORE_BAD_MAGIC: return "not a CBT state file (bad magic)";
	case CBT_STORE_BAD_VERSION: return "unknown format version";
	case CBT_STORE_CHECKSUM: return "checksum mismatch";
	case CBT_STORE_INVALID: return "invalid header fields";
	case CBT_STORE_NOT_CLEAN: return "not clean: the daemon did not stop cleanly";
	case CBT_STORE_CAPACITY: return "the device's capacity changed";
	case CBT_STORE_GEOMETRY: return "the block geometry changed (tracking parameters)";
	case CBT_STORE_CHECKPOINT: return "a checkpoint, to complete with the write-intent log";
	}
	return "?";
}

char *cbt_store_path(const char *dir, const char *name)
{
	char *p;

	return asprintf(&p, "%s/%s.cbt", dir, name) < 0 ? NULL : p;
}

char *cbt_store_wil_path(const char *dir, const char *name)
{
	char *p;

	return asprintf(&p, "%s/%s.wil", dir, name) < 0 ? NULL : p;
}

static uint32_t checksum(const uint8_t *hdr, const uint8_t *maps, uint64_t maps_len)
{
	uLong c = crc32_z(0, Z_NULL, 0);

	c = crc32_z(c, hdr, OFF_CHECKSUM);
	c = crc32_z(c, maps, maps_len);
	return (uint32_t)c;
}

int cbt_store_encode(struct cbt_map *m, unsigned flags, uint8_t **buf, size_t *len)
{
	uint8_t *b, *h;
	size_t n;

	lock_mutex(&m->lock, LOCK_CBT_MAP);
	if (m->blk_count > (SIZE_MAX - CBT_STORE_HEADER_SIZE) / 2) {
		unlock_mutex(&m->lock, LOCK_CBT_MAP);
		return -ENOMEM;
	}
	n = CBT_STORE_HEADER_SIZE + 2 * m->blk_count;
	b = calloc(1, n);
	if (!b) {
		unlock_mutex(&m->lock, LOCK_CBT_MAP);
		return -ENOMEM;
	}
	h = b;
	memcpy(h + OFF_MAGIC, CBT_STORE_MAGIC, 8);
	put_le32(h + OFF_VERSION, CBT_STORE_VERSION);
	put_le32(h + OFF_FLAGS, flags & (CBT_STORE_FLAG_CLEAN | CBT_STORE_FLAG_LOGGED));
	put_le64(h + OFF_CAPACITY, m->device_capacity);
	put_le32(h + OFF_SHIFT, m->blk_size_shift);
	put_le64(h + OFF_COUNT, m->blk_count);
	memcpy(h + OFF_GENERATION, m->generation_id, 16);
	h[OFF_ACTIVE] = m->snap_number_active;
	h[OFF_PREVIOUS] = m->snap_number_previous;
	h[OFF_CORRUPTED] = __atomic_load_n(&m->is_corrupted, __ATOMIC_RELAXED) ? 1 : 0;
	memcpy(b + CBT_STORE_HEADER_SIZE, m->read_map, m->blk_count);
	/* The data path marks the write map without the lock; the callers have
	 * drained the device, so this copy is what was marked. */
	memcpy(b + CBT_STORE_HEADER_SIZE + m->blk_count, m->write_map, m->blk_count);
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	put_le32(h + OFF_CHECKSUM, checksum(h, b + CBT_STORE_HEADER_SIZE, 2 * m->blk_count));
	*buf = b;
	*len = n;
	return 0;
}

int cbt_store_decode(const uint8_t *buf, size_t len, uint64_t capacity, const struct params *p,
		     struct cbt_map **out)
{
	uint64_t count, want_count, cap;
	unsigned want_shift;
	uint32_t shift, flags;
	struct cbt_map *m;
	int r;

	if (len < CBT_STORE_HEADER_SIZE)
		return CBT_STORE_SHORT;
	if (memcmp(buf + OFF_MAGIC, CBT_STORE_MAGIC, 8) != 0)
		return CBT_STORE_BAD_MAGIC;
	if (get_le32(buf + OFF_VERSION) != CBT_STORE_VERSION)
		return CBT_STORE_BAD_VERSION;
	count = get_le64(buf + OFF_COUNT);
	/* Overflow-safe: len - header >= 2 * count. */
	if (count > (len - CBT_STORE_HEADER_SIZE) / 2)
		return CBT_STORE_SHORT;
	if (len - CBT_STORE_HEADER_SIZE != 2 * count)
		return CBT_STORE_LONG;
	if (get_le32(buf + OFF_CHECKSUM) != checksum(buf, buf + CBT_STORE_HEADER_SIZE, 2 * count))
		return CBT_STORE_CHECKSUM;
	flags = get_le32(buf + OFF_FLAGS);
	shift = get_le32(buf + OFF_SHIFT);
	if ((flags & ~(CBT_STORE_FLAG_CLEAN | CBT_STORE_FLAG_LOGGED)) || shift > 63 || get_le32(buf + OFF_RESERVED1) ||
	    buf[OFF_RESERVED2] || buf[OFF_ACTIVE] == 0 || buf[OFF_CORRUPTED] > 1)
		return CBT_STORE_INVALID;
	if (!(flags & (CBT_STORE_FLAG_CLEAN | CBT_STORE_FLAG_LOGGED)))
		return CBT_STORE_NOT_CLEAN;
	cap = get_le64(buf + OFF_CAPACITY);
	if (cap != capacity)
		return CBT_STORE_CAPACITY;
	cbt_map_geometry(p, capacity, &want_shift, &want_count);
	if (shift != want_shift || count != want_count)
		return CBT_STORE_GEOMETRY;

	r = cbt_map_create(&m, capacity, p);
	if (r < 0)
		return r;
	memcpy(m->generation_id, buf + OFF_GENERATION, 16);
	m->snap_number_active = buf[OFF_ACTIVE];
	m->snap_number_previous = buf[OFF_PREVIOUS];
	m->is_corrupted = buf[OFF_CORRUPTED] != 0;
	memcpy(m->read_map, buf + CBT_STORE_HEADER_SIZE, count);
	memcpy(m->write_map, buf + CBT_STORE_HEADER_SIZE + count, count);
	*out = m;
	return flags & CBT_STORE_FLAG_CLEAN ? CBT_STORE_OK : CBT_STORE_CHECKPOINT;
}

int cbt_store_load(const char *path, uint64_t capacity, const struct params *p, struct cbt_map **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t *buf = NULL;
	struct stat st;
	ssize_t len;
	int r;

	if (fd < 0) {
		if (errno == ENOENT)
			return CBT_STORE_MISSING;
		log_error("%s: %s", path, strerror(errno));
		return CBT_STORE_UNREADABLE;
	}
	if (fstat(fd, &st) < 0) {
		log_error("%s: %s", path, strerror(errno));
		close(fd);
		return CBT_STORE_UNREADABLE;
	}
	if (!S_ISREG(st.st_mode)) {
		log_error("%s: not a regular file", path);
		close(fd);
		return CBT_STORE_UNREADABLE;
	}
	if ((uint64_t)st.st_size > SIZE_MAX - 1 || !(buf = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return -ENOMEM;
	}
	/* One byte more than the size: a file that grew since is read whole. */
	len = io_read_all(fd, buf, (size_t)st.st_size + 1);
	if (len < 0) {
		log_error("%s: read: %s", path, strerror((int)-len));
		free(buf);
		close(fd);
		return CBT_STORE_UNREADABLE;
	}
	close(fd);
	r = (size_t)len > (size_t)st.st_size ? CBT_STORE_LONG
					       : cbt_store_decode(buf, (size_t)len, capacity, p, out);
	free(buf);
	return r;
}

/* The directory PATH is in, opened for fsync; -errno. */
static int open_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd;

	if (!slash) {
		fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		return fd < 0 ? -errno : fd;
	}
	dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
	if (!dir)
		return -ENOMEM;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	return fd < 0 ? -errno : fd;
}

static int sync_dir_of(const char *path)
{
	int fd = open_dir_of(path), r = 0;

	if (fd < 0)
		return fd;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int cbt_store_save(const char *path, struct cbt_map *m, unsigned flags)
{
	const char *step = "open";
	uint8_t *buf = NULL;
	char *tmp = NULL;
	size_t len;
	int fd = -1, r;

	if (asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		r = -ENOMEM;
		goto fail;
	}
	r = cbt_store_encode(m, flags, &buf, &len);
	if (r < 0)
		goto fail;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	/* The fault points fail each step as the system call would
	 * (docs/faults.md). */
	step = "write";
	r = fault_point_hit("state.write");
	if (r == 0)
		r = io_write_all(fd, buf, len);
	if (r < 0)
		goto fail;
	step = "fsync";
	r = fault_point_hit("state.fsync");
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r < 0)
		goto fail;
	step = "close";
	r = close(fd) < 0 ? -errno : 0;
	fd = -1;
	if (r < 0)
		goto fail;
	step = "rename";
	r = fault_point_hit("state.rename");
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		goto fail;
	free(buf);
	free(tmp);
	/* The new file is whole and on disk; if the rename is not, a crash
	 * leaves the old file, which is never CLEAN while the daemon runs. */
	r = sync_dir_of(path);
	if (r < 0)
		log_error("%s: fsync of its directory: %s", path, strerror(-r));
	return r;

fail:
	log_error("%s: %s: %s", tmp ? tmp : path, step, strerror(-r));
	if (fd >= 0)
		close(fd);
	if (tmp)
		unlink(tmp);
	free(tmp);
	free(buf);
	return r;
}

int cbt_store_remove(const char *path)
{
	int r;

	if (unlink(path) < 0) {
		if (errno == ENOENT)
			return 0;
		r = -errno;
		log_error("%s: cannot remove: %s", path, strerror(-r));
		return r;
	}
	r = sync_dir_of(path);
	if (r < 0)
		log_error("%s: fsync of its directory: %s", path, strerror(-r));
	return r;
}

int cbt_store_dir_prepare(const char *dir, char **abs, int *lock_fd)
{
	struct stat st;
	int fd, r;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_error("--state-dir %s: cannot make it: %s", dir, strerror(-r));
		return r;
	}
	if (stat(dir, &st) < 0) {
		r = -errno;
		log_error("--state-dir %s: %s", dir, strerror(-r));
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("--state-dir %s: not a directory", dir);
		return -ENOTDIR;
	}
	if (access(dir, W_OK | X_OK) < 0) {
		r = -errno;
		log_error("--state-dir %s: not writable: %s", dir, strerror(-r));
		return r;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		if (r == -EWOULDBLOCK) {
			log_error("--state-dir %s: in use by another bdfilterd", dir);
			r = -EBUSY;
		} else {
			log_error("--state-dir %s: %s", dir, strerror(-r));
		}
		if (fd >= 0)
			close(fd);
		return r;
	}
	*abs = realpath(dir, NULL);
	if (!*abs) {
		r = -errno;
		log_error("--state-dir %s: %s", dir, strerror(-r));
		close(fd);
		return r;
	}
	*lock_fd = fd;
	return 0;
}
