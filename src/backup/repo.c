/* The backup repository on disk: see repo.h and docs/backup-repo.md. This
 * file owns the format (repo.json, manifest.json, index) and the atomicity
 * rules; nothing else reads or writes the repository's metadata. */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <xxhash.h>

#include "backup/block_list.h"
#include "backup/repo.h"
#include "backup/util.h"
#include "common/io.h"

#define REPO_FORMAT "bdfilter-backup"
#define REPO_VERSION 1
#define INDEX_MAGIC "BDFBKIX1"
#define INDEX_VERSION 1
#define INDEX_HEADER 24
#define INDEX_ENTRY 32
#define MAX_BLOCK_SIZE (64u << 20)

/* An error: printed, or handed to the caller in *WHY (verify collects them). */
static void report(char **why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(char **why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (!why) {
		fputs("bdfilter-backup: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	} else {
		*why = bk_vformat(fmt, ap);
	}
	va_end(ap);
}

void repo_hash(const void *buf, size_t len, uint8_t out[REPO_HASH_LEN])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits(buf, len));
	memcpy(out, c.digest, REPO_HASH_LEN);
}

void repo_hash_hex(const uint8_t h[REPO_HASH_LEN], char out[2 * REPO_HASH_LEN + 1])
{
	for (int i = 0; i < REPO_HASH_LEN; i++)
		sprintf(out + 2 * i, "%02x", h[i]);
}

static int hex_to_hash(const char *s, uint8_t h[REPO_HASH_LEN])
{
	if (!s || strlen(s) != 2 * REPO_HASH_LEN)
		return -EINVAL;
	for (int i = 0; i < REPO_HASH_LEN; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		h[i] = (uint8_t)v;
	}
	return 0;
}

static bool valid_block_size(uint64_t bs)
{
	return bs >= 4096 && bs <= MAX_BLOCK_SIZE && (bs & (bs - 1)) == 0;
}

/* ---- small file helpers, relative to the repository's directory ---- */

/* Read a whole small file (at most MAX bytes) into a NUL-terminated buffer. */
/* Open NAME for reading only if it is a regular file: a FIFO or a device
 * planted in a repository must not hang or feed a reader (O_NONBLOCK keeps
 * the open of a FIFO from waiting for a writer). -EINVAL for another type. */
static int open_regular(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	return fd;
}

/* What open_regular's and read_small's errors say to a user. */
static const char *file_error(int e)
{
	return e == -EINVAL ? "not a regular file" : e == -EFBIG ? "too large" : strerror(-e);
}

static int read_small(int dirfd, const char *name, size_t max, char **out, size_t *len)
{
	int fd = open_regular(dirfd, name);
	struct stat st;
	char *buf;
	ssize_t got;

	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size > max) {
		int r = errno ? -errno : -EFBIG;

		close(fd);
		return (uint64_t)st.st_size > max ? -EFBIG : r;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	/* A file that shrank since the fstat is read as it is now. */
	got = io_read_all(fd, buf, (size_t)st.st_size);
	close(fd);
	if (got < 0) {
		free(buf);
		return (int)got;
	}
	buf[got] = '\0';
	*out = buf;
	if (len)
		*len = (size_t)got;
	return 0;
}

/* Write NAME in DIRFD with LEN bytes, synced, through a temporary name. */
static int write_file_atomic(int dirfd, const char *name, const void *buf, size_t len)
{
	char tmp[64];
	int fd, r;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	/* Not through a symlink someone left by that name. */
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	r = io_write_all(fd, buf, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r == 0 && fsync(dirfd) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(dirfd, tmp, 0);
	return r;
}

/* ---- leftovers of interrupted backups ---- */

/* The files a backup writes into its .tmp-NNNNNN (repo_backup_begin and
 * repo_backup_commit, through write_file_atomic's temporary names): all a
 * leftover may hold. */
static const char *const backup_files[] = { "data", "index", ".index.tmp", "manifest.json", ".manifest.json.tmp" };

/* .tmp-NNNNNN, the name repo_backup_begin gives. */
static bool is_tmp_name(const char *name)
{
	if (strncmp(name, ".tmp-", 5) || strlen(name) != 11)
		return false;
	for (int i = 5; i < 11; i++)
		if (name[i] < '0' || name[i] > '9')
			return false;
	return true;
}

/* NAME in the directory FD is a regular file of backup_files (a symlink or a
 * directory by that name is not); else why not, in WHY. */
static bool is_backup_file(int fd, const char *name, char *why, size_t len)
{
	struct stat st;
	size_t i;

	for (i = 0; i < sizeof(backup_files) / sizeof(backup_files[0]); i++)
		if (!strcmp(name, backup_files[i]))
			break;
	if (i == sizeof(backup_files) / sizeof(backup_files[0])) {
		snprintf(why, len, "it holds '%s', which no backup writes", name);
		return false;
	}
	if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, len, "its '%s' is not a regular file", name);
		return false;
	}
	return true;
}

/* Remove NAME, a .tmp-* of the repository, if it is what an interrupted
 * backup leaves: a directory .tmp-NNNNNN of backup_files. The command often
 * runs as root, and a name in the repository may be anything someone put
 * there: it is opened without following a symlink and emptied through that
 * fd, so nothing outside the repository is reached. Anything else is left
 * alone for a person to look at, with a warning; the command goes on. */
static void remove_leftover(struct repo *r, const char *name)
{
	char why[160];
	struct dirent *de;
	DIR *d;
	int fd;

	if (!is_tmp_name(name)) {
		snprintf(why, sizeof(why), "not named .tmp-NNNNNN");
		goto foreign;
	}
	fd = openat(r->dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		struct stat st;

		if (errno == ENOENT)
			return;
		if (errno != ELOOP && errno != ENOTDIR)
			snprintf(why, sizeof(why), "%s", strerror(errno));
		else /* (lstat for the message only: what was opened is what counts) */
			snprintf(why, sizeof(why), "%s",
				 fstatat(r->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) ?
					 "a symbolic link" : "not a directory");
		goto foreign;
	}
	d = fdopendir(fd);
	if (!d) {
		snprintf(why, sizeof(why), "%s", strerror(errno));
		close(fd);
		goto foreign;
	}
	/* Look at everything first: a directory with one foreign thing in it
	 * is kept whole. */
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    !is_backup_file(fd, de->d_name, why, sizeof(why))) {
			closedir(d);
			goto foreign;
		}
	rewinddir(d);
	/* Checked again per file: what appeared since stays, and so does the
	 * directory then. */
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    is_backup_file(fd, de->d_name, why, sizeof(why)))
			unlinkat(fd, de->d_name, 0);
	closedir(d);
	if (unlinkat(r->dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		bk_error("warning: %s/%s: cannot remove it: %s", r->dir, name, strerror(errno));
	return;
foreign:
	bk_error("warning: %s/%s is not a leftover of bdfilter-backup (%s): left alone", r->dir, name, why);
}

/* ---- manifests ---- */

static void backup_info_clear(struct backup_info *b)
{
	free(b->from);
	free(b->generation);
	free(b->bitmap);
	free(b->time);
	free(b->error);
}

static void set_error(struct backup_info *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct backup_info *b, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = bk_vformat(fmt, ap);
	va_end(ap);
	free(b->error);
	b->error = msg ? msg : strdup("out of memory");
}

void repo_parse_manifest(uint32_t block_size, struct backup_info *b, const char *text, const char *name)
{
	struct json_object *o, *p;
	const char *kind, *s;
	bool has_parent;
	int64_t v;

	o = json_tokener_parse(text);
	if (!o || !json_object_is_type(o, json_type_object)) {
		set_error(b, "backup %u: %s is not a JSON object", b->num, name);
		json_object_put(o);
		return;
	}
	kind = bk_json_str(o, "kind");
#define BAD(what) do { set_error(b, "backup %u: %s: bad or missing %s", b->num, name, what); goto out; } while (0)
	if (bk_json_uint(o, "backup") != (int64_t)b->num)
		BAD("\"backup\" (not this directory's number)");
	if (!kind || (strcmp(kind, "full") && strcmp(kind, "incremental")))
		BAD("\"kind\"");
	b->full = strcmp(kind, "full") == 0;
	/* The chain rules one manifest shows (repo_check_chain has those
	 * between manifests): restore and verify index the backups by parent. */
#define RULE(...) do { set_error(b, __VA_ARGS__); goto out; } while (0)
	has_parent = json_object_object_get_ex(o, "parent", &p) && !json_object_is_type(p, json_type_null);
	v = has_parent && json_object_is_type(p, json_type_int) ? json_object_get_int64(p) : -1;
	if (b->full && has_parent)
		RULE("backup %u: %s: a full backup has no parent, this one names %s", b->num, name,
		     json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN));
	if (!b->full && b->num == 0)
		RULE("backup 0: %s: an incremental, but backup 0 must be a full backup", name);
	if (!b->full && (!has_parent || !json_object_is_type(p, json_type_int)))
		RULE("backup %u: %s: an incremental needs a parent (bad or missing \"parent\")", b->num, name);
	if (!b->full && (v < 0 || v >= b->num))
		RULE("backup %u: %s: \"parent\" %" PRId64 " is not an earlier backup", b->num, name, v);
	/* An incremental holds the changes since the backup before it: on
	 * any other it would restore, checksums and all, a wrong image. */
	if (!b->full && v != (int64_t)b->num - 1)
		RULE("backup %u: %s: \"parent\" %" PRId64 " is not backup %u, the one before it", b->num, name, v,
		     b->num - 1);
#undef RULE
	b->parent = (int)v;
	if ((v = bk_json_uint(o, "size")) <= 0)
		BAD("\"size\"");
	b->size = (uint64_t)v;
	if (bk_json_uint(o, "block_size") != block_size)
		BAD("\"block_size\" (not the repository's)");
	b->block_size = block_size;
	if (!(s = bk_json_str(o, "from")) || !(b->from = strdup(s)))
		BAD("\"from\"");
	if (!(s = bk_json_str(o, "time")) || !(b->time = strdup(s)))
		BAD("\"time\"");
	if ((s = bk_json_str(o, "generation")) && !(b->generation = strdup(s)))
		BAD("\"generation\"");
	if ((s = bk_json_str(o, "bitmap")) && !(b->bitmap = strdup(s)))
		BAD("\"bitmap\"");
	b->changes_number = bk_json_uint(o, "changes_number");
	if ((v = bk_json_uint(o, "blocks")) < 0)
		BAD("\"blocks\"");
	b->blocks = (uint64_t)v;
	if ((v = bk_json_uint(o, "zero_blocks")) < 0 || (uint64_t)v > b->blocks)
		BAD("\"zero_blocks\"");
	b->zero_blocks = (uint64_t)v;
	if ((v = bk_json_uint(o, "bytes_stored")) < 0)
		BAD("\"bytes_stored\"");
	b->bytes_stored = (uint64_t)v;
	if ((v = bk_json_uint(o, "data_size")) < 0)
		BAD("\"data_size\"");
	b->data_size = (uint64_t)v;
	if (hex_to_hash(bk_json_str(o, "index_xxh128"), b->index_hash) < 0)
		BAD("\"index_xxh128\"");
#undef BAD
out:
	json_object_put(o);
}

static void load_manifest(struct repo *r, struct backup_info *b)
{
	char name[32], *text = NULL;
	int e;

	snprintf(name, sizeof(name), "%06u/manifest.json", b->num);
	e = read_small(r->dirfd, name, 1 << 20, &text, NULL);
	if (e < 0) {
		set_error(b, "backup %u: %s: %s", b->num, name, file_error(e));
		return;
	}
	repo_parse_manifest(r->block_size, b, text, name);
	free(text);
}

static int write_manifest(int dirfd, const struct backup_info *b)
{
	struct json_object *o = json_object_new_object();
	char hex[2 * REPO_HASH_LEN + 1];
	const char *text;
	int r;

	repo_hash_hex(b->index_hash, hex);
	json_object_object_add(o, "backup", json_object_new_int64(b->num));
	json_object_object_add(o, "kind", json_object_new_string(b->full ? "full" : "incremental"));
	json_object_object_add(o, "parent", b->full ? NULL : json_object_new_int64(b->parent));
	json_object_object_add(o, "from", json_object_new_string(b->from));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)b->size));
	json_object_object_add(o, "block_size", json_object_new_int64(b->block_size));
	json_object_object_add(o, "generation", b->generation ? json_object_new_string(b->generation) : NULL);
	json_object_object_add(o, "changes_number",
			       b->changes_number >= 0 ? json_object_new_int64(b->changes_number) : NULL);
	json_object_object_add(o, "bitmap", b->bitmap ? json_object_new_string(b->bitmap) : NULL);
	json_object_object_add(o, "time", json_object_new_string(b->time));
	json_object_object_add(o, "blocks", json_object_new_int64((int64_t)b->blocks));
	json_object_object_add(o, "zero_blocks", json_object_new_int64((int64_t)b->zero_blocks));
	json_object_object_add(o, "bytes_stored", json_object_new_int64((int64_t)b->bytes_stored));
	json_object_object_add(o, "data_size", json_object_new_int64((int64_t)b->data_size));
	json_object_object_add(o, "index_xxh128", json_object_new_string(hex));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	r = write_file_atomic(dirfd, "manifest.json", text, strlen(text));
	json_object_put(o);
	return r;
}

/* ---- opening ---- */

int repo_parse_repo_json(const char *text, uint32_t *block_size)
{
	struct json_object *o = json_tokener_parse(text);
	const char *fmt = o ? bk_json_str(o, "format") : NULL;
	int64_t bs = o ? bk_json_uint(o, "block_size") : -1;
	int e = -EINVAL;

	if (fmt && !strcmp(fmt, REPO_FORMAT) && bk_json_uint(o, "version") == REPO_VERSION && valid_block_size((uint64_t)bs)) {
		*block_size = (uint32_t)bs;
		e = 0;
	}
	json_object_put(o);
	return e;
}

static int read_repo_json(struct repo *r)
{
	char *text = NULL;
	int e = read_small(r->dirfd, "repo.json", 1 << 16, &text, NULL);

	if (e < 0) {
		bk_error("%s/repo.json: %s%s", r->dir, file_error(e),
			 e == -ENOENT ? " (not a bdfilter-backup repository)" : "");
		return e;
	}
	e = repo_parse_repo_json(text, &r->block_size);
	free(text);
	if (e < 0)
		bk_error("%s/repo.json: not a version %d %s repository, or damaged", r->dir, REPO_VERSION,
			 REPO_FORMAT);
	return e;
}

static int create_repo_json(struct repo *r, uint32_t block_size)
{
	char text[160];
	int e;

	if (!valid_block_size(block_size)) {
		bk_error("block size %u: a power of two from 4096 to %u is needed", block_size, MAX_BLOCK_SIZE);
		return -EINVAL;
	}
	snprintf(text, sizeof(text), "{ \"format\": \"%s\", \"version\": %d, \"block_size\": %u }\n",
		 REPO_FORMAT, REPO_VERSION, block_size);
	e = write_file_atomic(r->dirfd, "repo.json", text, strlen(text));
	if (e < 0)
		bk_error("%s/repo.json: %s", r->dir, strerror(-e));
	return e;
}

static int cmp_backup(const void *a, const void *b)
{
	unsigned x = ((const struct backup_info *)a)->num, y = ((const struct backup_info *)b)->num;

	return x < y ? -1 : x > y;
}

/* Scan the directory: remove the .tmp-* interrupted backups left (only with
 * the exclusive lock: a backup being written holds it), collect the backup
 * directories. */
static int scan(struct repo *r, bool exclusive)
{
	int fd = dup(r->dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	int e = 0;

	if (!d) {
		if (fd >= 0)
			close(fd);
		bk_error("%s: %s", r->dir, strerror(errno));
		return -errno;
	}
	while ((de = readdir(d))) {
		unsigned long num;

		if (strncmp(de->d_name, ".tmp-", 5) == 0) {
			if (exclusive)
				remove_leftover(r, de->d_name);
			continue;
		}
		/* Six digits, nothing else: strtoul alone takes "+00001",
		 * " 00001" and "-00000" too. */
		if (strlen(de->d_name) != 6 || strspn(de->d_name, "0123456789") != 6)
			continue;
		num = strtoul(de->d_name, NULL, 10);
		if (r->n % 16 == 0) {
			struct backup_info *v = realloc(r->b, (r->n + 16) * sizeof(*v));

			if (!v) {
				e = -ENOMEM;
				break;
			}
			r->b = v;
		}
		r->b[r->n++] = (struct backup_info){ .num = (unsigned)num, .changes_number = -1, .parent = -1 };
	}
	closedir(d);
	if (e < 0) {
		bk_error("out of memory");
		return e;
	}
	if (r->n > 1)
		qsort(r->b, r->n, sizeof(*r->b), cmp_backup);
	for (unsigned i = 0; i < r->n; i++)
		if (r->b[i].num != i) {
			bk_error("%s: backup %u is missing (the repository holds %06u)", r->dir, i, r->b[i].num);
			return -ENOENT;
		}
	for (unsigned i = 0; i < r->n; i++)
		load_manifest(r, &r->b[i]);
	repo_check_chain(r->b, r->n);
	return 0;
}

int repo_open(const char *dir, enum repo_mode mode, uint32_t block_size, struct repo **out)
{
	struct repo *r = calloc(1, sizeof(*r));
	bool fresh = false;
	int e;

	if (!r || !(r->dir = strdup(dir))) {
		free(r);
		bk_error("out of memory");
		return -ENOMEM;
	}
	r->lockfd = -1;
	if (mode == REPO_CREATE && mkdir(dir, 0755) == 0)
		fresh = true;
	r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dirfd < 0) {
		e = -errno;
		bk_error("repository %s: %s", dir, strerror(-e));
		goto fail;
	}
	/* Not through a symlink someone left by that name: O_CREAT would make
	 * its target, wherever it is. */
	r->lockfd = openat(r->dirfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (r->lockfd < 0 && errno == EROFS && mode == REPO_READ)
		r->lockfd = openat(r->dirfd, "lock", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (r->lockfd < 0) {
		e = -errno;
		bk_error("repository %s: lock: %s", dir, strerror(-e));
		goto fail;
	}
	if (flock(r->lockfd, (mode == REPO_READ ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		e = -errno;
		bk_error("repository %s is in use by another bdfilter-backup", dir);
		goto fail;
	}
	if (mode == REPO_CREATE && faccessat(r->dirfd, "repo.json", F_OK, 0) < 0 && errno == ENOENT) {
		/* A directory of other things is not taken over. */
		int fd = dup(r->dirfd);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;
		bool empty = true;

		while (d && (de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "lock"))
				empty = false;
		if (d)
			closedir(d);
		if (!empty && !fresh) {
			bk_error("%s is not empty and not a bdfilter-backup repository", dir);
			e = -ENOTEMPTY;
			goto fail;
		}
		if ((e = create_repo_json(r, block_size)) < 0)
			goto fail;
	}
	if ((e = read_repo_json(r)) < 0)
		goto fail;
	if ((e = scan(r, mode != REPO_READ)) < 0)
		goto fail;
	*out = r;
	return 0;
fail:
	repo_close(r);
	return e;
}

void repo_close(struct repo *r)
{
	if (!r)
		return;
	for (unsigned i = 0; i < r->n; i++)
		backup_info_clear(&r->b[i]);
	free(r->b);
	if (r->lockfd >= 0)
		close(r->lockfd);
	if (r->dirfd >= 0)
		close(r->dirfd);
	free(r->dir);
	free(r);
}

const struct backup_info *repo_backup(struct repo *r, unsigned num)
{
	if (num >= r->n) {
		if (r->n == 0)
			bk_error("repository %s holds no backup", r->dir);
		else
			bk_error("no backup %u: the repository holds 0 to %u", num, r->n - 1);
		return NULL;
	}
	if (r->b[num].error) {
		bk_error("%s", r->b[num].error);
		return NULL;
	}
	return &r->b[num];
}

/* The chain rules between manifests, in backup order so that a parent's
 * verdict is known before its children's: an incremental rests on a usable
 * backup of its size and block size. The parent's range, which
 * repo_parse_manifest checked, is checked again: B is indexed by it. */
void repo_check_chain(struct backup_info *b, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const struct backup_info *p;

		if (b[i].error || b[i].full)
			continue;
		if (b[i].parent < 0 || (unsigned)b[i].parent >= i) {
			set_error(&b[i], "backup %u: its parent %d is not an earlier backup", i, b[i].parent);
			continue;
		}
		p = &b[b[i].parent];
		if (p->error)
			set_error(&b[i], "backup %u: rests on backup %u, which is unusable", i, p->num);
		else if (p->size != b[i].size)
			set_error(&b[i], "backup %u: its size (%" PRIu64 ") differs from backup %u's (%" PRIu64
					 "), its parent",
				  i, b[i].size, p->num, p->size);
		else if (p->block_size != b[i].block_size)
			set_error(&b[i], "backup %u: its block size (%" PRIu32 ") differs from backup %u's (%" PRIu32
					 "), its parent",
				  i, b[i].block_size, p->num, p->block_size);
	}
}

int repo_chain(struct repo *r, unsigned num, unsigned *out)
{
	unsigned n = 0;

	if (!repo_backup(r, num))
		return -EINVAL;
	/* repo_check_chain made every step back one to a usable, earlier
	 * backup; the walk relies on nothing else. */
	for (unsigned k = num;; k = (unsigned)r->b[k].parent) {
		const struct backup_info *b = &r->b[k];

		if (b->error || (!b->full && (b->parent < 0 || (unsigned)b->parent >= k))) {
			bk_error("backup %u: its chain is broken at backup %u", num, k);
			return -EINVAL;
		}
		out[n++] = k;
		if (b->full)
			break;
	}
	for (unsigned i = 0; i < n / 2; i++) {
		unsigned x = out[i];

		out[i] = out[n - 1 - i];
		out[n - 1 - i] = x;
	}
	return (int)n;
}

/* ---- index ---- */

int repo_parse_index(const struct backup_info *b, const char *buf, size_t len, const char *name, char **why,
		     struct repo_entry **out, uint64_t *n)
{
	uint8_t h[REPO_HASH_LEN];
	struct repo_entry *e = NULL;
	uint64_t count, nblocks = block_count(b->size, b->block_size);
	uint32_t version;
	unsigned num = b->num;
	int err;

#define FAIL(code, ...) do { report(why, __VA_ARGS__); err = (code); goto out; } while (0)
	repo_hash(buf, len, h);
	if (memcmp(h, b->index_hash, REPO_HASH_LEN))
		FAIL(-EIO, "backup %u: %s does not match its checksum in the manifest (damaged or truncated)", num,
		     name);
	if (len < INDEX_HEADER || memcmp(buf, INDEX_MAGIC, 8))
		FAIL(-EINVAL, "backup %u: %s: not a version %d index", num, name, INDEX_VERSION);
	memcpy(&version, buf + 8, 4);
	if (le32toh(version) != INDEX_VERSION)
		FAIL(-EINVAL, "backup %u: %s: not a version %d index", num, name, INDEX_VERSION);
	memcpy(&count, buf + 16, 8);
	count = le64toh(count);
	if (count != b->blocks || count > (len - INDEX_HEADER) / INDEX_ENTRY ||
	    len != INDEX_HEADER + count * INDEX_ENTRY)
		FAIL(-EINVAL, "backup %u: %s: %" PRIu64 " entries, the manifest says %" PRIu64, num, name, count,
		     b->blocks);
	e = calloc(count ? count : 1, sizeof(*e));
	if (!e)
		FAIL(-ENOMEM, "out of memory");
	for (uint64_t i = 0; i < count; i++) {
		const char *p = buf + INDEX_HEADER + i * INDEX_ENTRY;
		uint64_t blk, off;

		memcpy(&blk, p, 8);
		memcpy(&off, p + 8, 8);
		e[i].block = le64toh(blk);
		e[i].offset = le64toh(off);
		memcpy(e[i].hash, p + 16, REPO_HASH_LEN);
		if (e[i].block >= nblocks || (i > 0 && e[i].block <= e[i - 1].block))
			FAIL(-EINVAL, "backup %u: %s: entry %" PRIu64 " names block %" PRIu64 " (out of order or range)",
			     num, name, i, e[i].block);
		if (e[i].offset != REPO_ZERO_BLOCK &&
		    (e[i].offset > b->data_size ||
		     b->data_size - e[i].offset < block_length(e[i].block, b->size, b->block_size)))
			FAIL(-EINVAL, "backup %u: %s: block %" PRIu64 " lies outside the data file", num, name,
			     e[i].block);
	}
#undef FAIL
	*out = e;
	*n = count;
	e = NULL;
	err = 0;
out:
	free(e);
	return err;
}

int repo_read_index(struct repo *r, unsigned num, char **why, struct repo_entry **out, uint64_t *n)
{
	const struct backup_info *b = &r->b[num];
	uint64_t nblocks = block_count(b->size, b->block_size);
	char name[32], *buf = NULL;
	size_t len;
	int err;

	snprintf(name, sizeof(name), "%06u/index", num);
	/* The index has an entry per block at most. */
	err = read_small(r->dirfd, name, INDEX_HEADER + (nblocks + 1) * INDEX_ENTRY, &buf, &len);
	if (err < 0) {
		report(why, "backup %u: %s: %s", num, name, file_error(err));
		return err;
	}
	err = repo_parse_index(b, buf, len, name, why, out, n);
	free(buf);
	return err;
}

int repo_open_data(struct repo *r, unsigned num, char **why)
{
	char name[32];
	struct stat st;
	int fd;

	snprintf(name, sizeof(name), "%06u/data", num);
	fd = open_regular(r->dirfd, name);
	if (fd < 0) {
		report(why, "backup %u: %s: %s", num, name, file_error(fd));
		return fd;
	}
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != r->b[num].data_size) {
		report(why, "backup %u: %s holds %jd bytes, the manifest says %" PRIu64 " (truncated?)", num, name,
		       (intmax_t)st.st_size, r->b[num].data_size);
		close(fd);
		return -EIO;
	}
	return fd;
}

/* ---- writing a backup ---- */

int repo_backup_begin(struct repo *r, struct backup_writer *w)
{
	int e;

	*w = (struct backup_writer){ .r = r, .num = r->n, .tmpfd = -1, .datafd = -1 };
	snprintf(w->tmpname, sizeof(w->tmpname), ".tmp-%06u", w->num);
	/* A leftover of this name is gone (scan); what is still there is not
	 * ours, and is not touched. */
	if (mkdirat(r->dirfd, w->tmpname, 0755) < 0) {
		e = -errno;
		if (e == -EEXIST)
			bk_error("%s/%s exists and is not a leftover of bdfilter-backup: move it away", r->dir,
				 w->tmpname);
		else
			bk_error("%s/%s: %s", r->dir, w->tmpname, strerror(-e));
		return e;
	}
	if ((w->tmpfd = openat(r->dirfd, w->tmpname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
	    (w->datafd = openat(w->tmpfd, "data", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
		e = -errno;
		bk_error("%s/%s: %s", r->dir, w->tmpname, strerror(-e));
		repo_backup_abort(w);
		return e;
	}
	return 0;
}

int repo_backup_commit(struct backup_writer *w, struct backup_info *info, const struct repo_entry *e,
		       uint64_t n)
{
	struct repo *r = w->r;
	size_t len = INDEX_HEADER + n * INDEX_ENTRY;
	char *buf = calloc(1, len), final[16];
	uint32_t v = htole32(INDEX_VERSION);
	uint64_t count = htole64(n);
	struct stat st;
	time_t now = time(NULL);
	struct tm tm;
	char when[32];
	int err;

	if (!buf) {
		bk_error("out of memory");
		return -ENOMEM;
	}
	memcpy(buf, INDEX_MAGIC, 8);
	memcpy(buf + 8, &v, 4);
	memcpy(buf + 16, &count, 8);
	for (uint64_t i = 0; i < n; i++) {
		char *p = buf + INDEX_HEADER + i * INDEX_ENTRY;
		uint64_t blk = htole64(e[i].block), off = htole64(e[i].offset);

		memcpy(p, &blk, 8);
		memcpy(p + 8, &off, 8);
		memcpy(p + 16, e[i].hash, REPO_HASH_LEN);
	}
	repo_hash(buf, len, info->index_hash);
	err = write_file_atomic(w->tmpfd, "index", buf, len);
	free(buf);
	if (err < 0)
		goto fail;
	if (fsync(w->datafd) < 0 || fstat(w->datafd, &st) < 0) {
		err = -errno;
		goto fail;
	}
	info->num = w->num;
	info->data_size = (uint64_t)st.st_size;
	info->blocks = n;
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	free(info->time);
	info->time = strdup(when);
	if (!info->time) {
		err = -ENOMEM;
		goto fail;
	}
	if ((err = write_manifest(w->tmpfd, info)) < 0)
		goto fail;
	snprintf(final, sizeof(final), "%06u", w->num);
	if (renameat(r->dirfd, w->tmpname, r->dirfd, final) < 0 || fsync(r->dirfd) < 0) {
		err = -errno;
		goto fail;
	}
	close(w->datafd);
	close(w->tmpfd);
	w->datafd = w->tmpfd = -1;
	return 0;
fail:
	bk_error("%s/%s: %s", r->dir, w->tmpname, strerror(-err));
	repo_backup_abort(w);
	return err;
}

void repo_backup_abort(struct backup_writer *w)
{
	if (w->datafd >= 0)
		close(w->datafd);
	if (w->tmpfd >= 0)
		close(w->tmpfd);
	w->datafd = w->tmpfd = -1;
	if (w->r)
		remove_leftover(w->r, w->tmpname);
}
