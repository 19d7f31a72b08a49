/* libFuzzer harness for the backup repository's formats and rules
 * (backup/repo.c, backup/block_list.c): the first byte picks one, the rest is
 * its input.
 * 0: a backup's manifest.json;
 * 1: a repository of several backups, three bytes each (kind, parent, size),
 *    made into manifests, parsed, checked with repo_check_chain, and each
 *    usable one's chain walked with repo_chain as restore does; the verdicts
 *    are checked against the rules of docs/backup-repo.md computed here;
 * 2: repo.json;
 * 3: a whole repository on disk, records of (kind, path, content) made into
 *    directories, files and symbolic links (kept inside a scratch directory
 *    that also holds a file outside the repository), then repo_open as
 *    full and incremental do (leftovers removed), and every usable backup's
 *    chain, index and data opened as restore and verify do; "@INDEX@" in a
 *    manifest becomes its index's checksum, else nothing gets past it. The
 *    repository must list exactly its six-digit names and nothing outside it
 *    may change. Then each usable backup is opened as serve and mount do
 *    (image.h): its extents must tile the image, and reads at its start,
 *    middle and end must succeed or say EIO;
 * 4: a block list, from the extents a server reports, checked against a
 *    bitmap of the blocks they touch;
 * else: a backup's index, with the manifest's checksum made to match (else
 *    nothing gets past it) and its entry count taken from the header. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/block_list.h"
#include "backup/image.h"
#include "backup/repo.h"

#define MAX_BACKUPS 8

static void clear(struct backup_info *b)
{
	free(b->from);
	free(b->generation);
	free(b->bitmap);
	free(b->time);
	free(b->error);
}

static void one_manifest(const uint8_t *data, size_t size)
{
	struct backup_info b = { .num = 3, .changes_number = -1, .parent = -1 };
	char *text = strndup((const char *)data, size);

	if (!text)
		return;
	repo_parse_manifest(65536, &b, text, "manifest.json");
	free(text);
	clear(&b);
}

static void one_index(uint8_t sel, const uint8_t *data, size_t size)
{
	struct backup_info b = { .num = 3, .changes_number = -1, .parent = -1 };
	const char *buf = (const char *)data;
	struct repo_entry *e = NULL;
	char *why = NULL;
	uint64_t n = 0;

	b.size = (uint64_t)(sel & 0x7f) * 65536 + (sel & 0x80 ? 4096 : 0) + 512;
	b.block_size = 65536;
	b.data_size = 1 << 20;
	if (size >= 24)
		memcpy(&b.blocks, buf + 16, 8);
	repo_hash(buf, size, b.index_hash);
	if (repo_parse_index(&b, buf, size, "index", &why, &e, &n) == 0 && n > 0 &&
	    (e[n - 1].block * 65536 >= b.size))
		abort(); /* an entry past the image got through */
	free(e);
	free(why);
}

/* One backup as the bytes describe it, and what the rules make of it. */
struct spec {
	int kind;   /* 0 full, 1 incremental, 2 neither ("kind" missing or wrong) */
	int parent; /* -100 absent, -101 null, -102 a string, else the number */
	uint64_t size;
	uint32_t block_size;
};

static struct spec make_spec(const uint8_t *p)
{
	struct spec s;

	s.kind = p[0] % 4 == 3 ? 2 : p[0] % 4 == 0 ? 0 : 1;
	s.parent = p[1] == 255 ? -100 : p[1] == 254 ? -101 : p[1] == 253 ? -102 : (int)(p[1] % 12) - 2;
	s.size = 65536 * (uint64_t)(1 + (p[2] & 3)) - (p[2] & 4 ? 512 : 0);
	s.block_size = p[2] & 8 ? 4096 : 65536;
	return s;
}

static void write_manifest(const struct spec *s, unsigned num, char *text, size_t len)
{
	static const char *const kinds[] = { "\"kind\": \"full\", ", "\"kind\": \"incremental\", ", "" };
	char parent[40];

	if (s->parent == -100)
		parent[0] = '\0';
	else if (s->parent == -101)
		snprintf(parent, sizeof(parent), "\"parent\": null, ");
	else if (s->parent == -102)
		snprintf(parent, sizeof(parent), "\"parent\": \"1\", ");
	else
		snprintf(parent, sizeof(parent), "\"parent\": %d, ", s->parent);
	snprintf(text, len,
		 "{ \"backup\": %u, %s%s\"from\": \"nbd://x\", \"size\": %" PRIu64 ", \"block_size\": %" PRIu32
		 ", \"time\": \"2026-11-29T00:00:00Z\", \"blocks\": 0, \"zero_blocks\": 0, \"bytes_stored\": 0, "
		 "\"data_size\": 0, \"index_xxh128\": \"00112233445566778899aabbccddeeff\" }",
		 num, kinds[s->kind], parent, s->size, s->block_size);
}

static void chain(const uint8_t *data, size_t size)
{
	struct backup_info b[MAX_BACKUPS] = { 0 };
	struct spec s[MAX_BACKUPS];
	bool usable[MAX_BACKUPS];
	unsigned n = size / 3 < MAX_BACKUPS ? (unsigned)(size / 3) : MAX_BACKUPS, out[MAX_BACKUPS];
	struct repo r = { .dir = "fuzz", .dirfd = -1, .lockfd = -1, .block_size = 65536, .b = b, .n = n };
	char text[512], name[32];

	for (unsigned i = 0; i < n; i++) {
		s[i] = make_spec(data + 3 * i);
		b[i] = (struct backup_info){ .num = i, .changes_number = -1, .parent = -1 };
		write_manifest(&s[i], i, text, sizeof(text));
		snprintf(name, sizeof(name), "%06u/manifest.json", i);
		repo_parse_manifest(65536, &b[i], text, name);
	}
	repo_check_chain(b, n);
	for (unsigned i = 0; i < n; i++) {
		/* the rules, as docs/backup-repo.md says them */
		bool ok = s[i].kind != 2 && s[i].block_size == 65536;

		if (ok && s[i].kind == 0)
			ok = s[i].parent == -100 || s[i].parent == -101;
		else if (ok)
			ok = i > 0 && s[i].parent == (int)i - 1 && usable[i - 1] && s[i].size == s[i - 1].size;
		usable[i] = ok;
		if (usable[i] != !b[i].error)
			abort(); /* a verdict that is not the rules' */
	}
	for (unsigned k = 0; k < n; k++) {
		int len;

		if (b[k].error)
			continue;
		len = repo_chain(&r, k, out);
		/* oldest first: a full, then each one's child, up to K, all usable
		 * and of K's size */
		if (len < 1 || out[len - 1] != k || !b[out[0]].full)
			abort();
		for (int i = 0; i < len; i++)
			if (b[out[i]].error || b[out[i]].size != b[k].size ||
			    (i > 0 && (b[out[i]].full || b[out[i]].parent != (int)out[i - 1] || out[i - 1] >= out[i])))
				abort();
	}
	for (unsigned i = 0; i < n; i++)
		clear(&b[i]);
}

static void repo_json(const uint8_t *data, size_t size)
{
	char *text = strndup((const char *)data, size);
	uint32_t bs = 0;

	if (!text)
		return;
	if (repo_parse_repo_json(text, &bs) == 0 && (bs < 4096 || bs > (64u << 20) || (bs & (bs - 1))))
		abort(); /* a block size outside the format's got through */
	free(text);
}

/* ---- a repository on disk ---- */

#define MAX_DEPTH 3
#define MAX_FIXUPS 16

/* The scratch directory: BASE/repo is the repository, BASE/outside/keep the
 * file outside it that nothing may touch. Made once, emptied for each run. */
static char base[64];
static int base_fd = -1;

/* Remove NAME in DFD and all under it, never following a link. */
static void rm_rf(int dfd, const char *name)
{
	int fd;
	DIR *d;
	struct dirent *de;

	if (unlinkat(dfd, name, 0) == 0 || (errno != EISDIR && errno != EPERM))
		return;
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			rm_rf(dirfd(d), de->d_name);
	closedir(d);
	unlinkat(dfd, name, AT_REMOVEDIR);
}

static void cleanup(void)
{
	if (base_fd >= 0) {
		rm_rf(base_fd, "repo");
		rm_rf(base_fd, "outside");
		close(base_fd);
		rmdir(base);
	}
}

static bool scratch_ready(void)
{
	const char *tmp = getenv("TMPDIR");
	int fd;

	if (base_fd >= 0)
		return true;
	snprintf(base, sizeof(base), "%.40s/fuzz-repo.XXXXXX", tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
	if (!mkdtemp(base) || (base_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return false;
	atexit(cleanup);
	if (mkdirat(base_fd, "outside", 0755) < 0)
		return false;
	fd = openat(base_fd, "outside/keep", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* Split PATH into at most MAX_DEPTH components, none empty, "." or "..". */
static int split(char *path, char **comp)
{
	int n = 0;

	for (char *save = NULL, *c = strtok_r(path, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (n == MAX_DEPTH || !strcmp(c, ".") || !strcmp(c, ".."))
			return -1;
		comp[n++] = c;
	}
	return n;
}

/* Has PATH a ".." component? */
static bool has_dotdot(const char *path)
{
	for (const char *p = path; (p = strstr(p, "..")); p += 2)
		if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
			return true;
	return false;
}

/* A link target, for a link in a real directory at DEPTH below BASE, that
 * keeps every path through it inside BASE: relative and downward, or
 * exactly up to BASE and into outside/. A lexical check alone would not do:
 * ".." after a link climbs from where the link leads. Nothing in BASE is a
 * device or a FIFO, so no link leads to one. */
static bool target_inside(const char *t, int depth)
{
	if (!*t || t[0] == '/')
		return false;
	if (strncmp(t, "../", 3) != 0)
		return !has_dotdot(t);
	for (int i = 0; i < depth; i++, t += 3)
		if (strncmp(t, "../", 3) != 0)
			return false;
	return strncmp(t, "outside", 7) == 0 && (t[7] == '\0' || t[7] == '/') && !has_dotdot(t);
}

/* The directory of COMP[0..n-1] under REPO, made as needed, never through a
 * link; -1 if something else is in the way. */
static int open_parent(int repo, char **comp, int n)
{
	int fd = dup(repo);

	for (int i = 0; i < n && fd >= 0; i++) {
		int next;

		(void)mkdirat(fd, comp[i], 0755);
		next = openat(fd, comp[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	return fd;
}

static void write_at(int dfd, const char *name, const void *buf, size_t len)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);

	if (fd < 0)
		return;
	if (write(fd, buf, len) != (ssize_t)len)
		abort(); /* the scratch directory is broken: say so, do not fuzz on */
	close(fd);
}

/* A manifest's "@INDEX@" made the checksum of the index beside it. */
static void fix_index_hash(int repo, const char *dir)
{
	int dfd = openat(repo, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	char buf[4097], text[4097 + 32], hex[2 * REPO_HASH_LEN + 1], *at;
	uint8_t h[REPO_HASH_LEN];
	ssize_t n = 0;
	int fd;

	if (dfd < 0)
		return;
	fd = openat(dfd, "index", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf));
		close(fd);
	}
	repo_hash(buf, n > 0 ? (size_t)n : 0, h);
	repo_hash_hex(h, hex);
	fd = openat(dfd, "manifest.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n > 0) {
		buf[n] = '\0';
		if ((at = strstr(buf, "@INDEX@"))) {
			snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - buf), buf, hex, at + 7);
			unlinkat(dfd, "manifest.json", 0);
			write_at(dfd, "manifest.json", text, strlen(text));
		}
	}
	close(dfd);
}

static const uint8_t zero_block[65536];
static const char default_repo_json[] = "{ \"format\": \"bdfilter-backup\", \"version\": 1, \"block_size\": 65536 }";

/* Records: kind (0 a directory, 1 a file, 2 a link, 3 a file of zeros),
 * path length, path, content length (16 bits, little-endian), content; a
 * file of zeros has that length, and no content in the input (a data file
 * holds whole blocks, larger than libFuzzer's inputs). */
static void build(int repo, const uint8_t *p, size_t size)
{
	char fix[MAX_FIXUPS][32];
	int n_fix = 0;

	while (size >= 2) {
		unsigned kind = p[0] % 4, plen = p[1] % 32, clen = 0;
		char path[33], target[4097], *comp[MAX_DEPTH];
		unsigned zeros = 0;
		int n, dfd;

		p += 2;
		size -= 2;
		if (plen > size)
			plen = (unsigned)size;
		memcpy(path, p, plen);
		path[plen] = '\0';
		p += plen;
		size -= plen;
		if (size >= 2) {
			clen = p[0] | (unsigned)p[1] << 8;
			p += 2;
			size -= 2;
		}
		if (kind == 3) {
			zeros = clen;
			clen = 0;
		} else if (clen > size) {
			clen = (unsigned)size;
		}
		if (strlen(path) == plen && (n = split(path, comp)) > 0 && (dfd = open_parent(repo, comp, n - 1)) >= 0) {
			const char *leaf = comp[n - 1];

			if (kind == 0) {
				(void)mkdirat(dfd, leaf, 0755);
			} else if (kind == 1) {
				write_at(dfd, leaf, p, clen);
				if (!strcmp(leaf, "manifest.json") && n == 2 && n_fix < MAX_FIXUPS)
					snprintf(fix[n_fix++], sizeof(fix[0]), "%s", comp[0]);
			} else if (kind == 3) {
				write_at(dfd, leaf, zero_block, zeros);
			} else if (clen < sizeof(target)) {
				memcpy(target, p, clen);
				target[clen] = '\0';
				/* the link's depth below BASE: repo/ and its directories */
				if (strlen(target) == clen && target_inside(target, n))
					(void)symlinkat(target, dfd, leaf);
			}
			close(dfd);
		}
		p += clen;
		size -= clen;
	}
	for (int i = 0; i < n_fix; i++)
		fix_index_hash(repo, fix[i]);
	/* A repository unless the records made their own repo.json. */
	write_at(repo, "repo.json", default_repo_json, strlen(default_repo_json));
}

static bool six_digits(const char *name)
{
	for (int i = 0; i < 6; i++)
		if (name[i] < '0' || name[i] > '9')
			return false;
	return name[6] == '\0';
}

/* Everything in BASE/outside is as it was: keep, a file, and nothing else. */
static bool outside_intact(void)
{
	int fd = openat(base_fd, "outside", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	struct stat st;
	unsigned n = 0;
	bool ok;
	DIR *d;

	if (fd < 0 || !(d = fdopendir(fd)))
		return false;
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	ok = n == 1 && fstatat(dirfd(d), "keep", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
	     st.st_size == 0;
	closedir(d);
	return ok;
}

/* The restore point of backup AT (-1: the last usable one), as serve reads it. */
static int tile(void *opaque, uint64_t offset, uint64_t len, bool zero)
{
	uint64_t *next = opaque;

	if (offset != *next || len == 0)
		abort(); /* a gap, an overlap or an empty extent */
	*next = offset + len;
	return 0;
}

static void open_image(const char *dir, int64_t at)
{
	static char buf[3 << 16];
	struct image_open_opts o = { .repo = dir, .at = at };
	struct image *im;
	uint64_t size, next = 0;

	if (image_open(&o, &im) < 0)
		return;
	size = image_size(im);
	if (image_extents(im, 0, size, tile, &next) != 0 || next != size)
		abort();
	/* Whole blocks and cut ones, at the start, in the middle and at the end. */
	for (int i = 0; i < 3; i++) {
		uint64_t len = size < sizeof(buf) ? size : sizeof(buf) - 1000;
		uint64_t off = i == 0 ? 0 : i == 1 ? (size - len) / 2 + 7 : size - len;
		int r;

		if (off > size - len)
			off = size - len;
		r = image_read(im, buf, len, off);
		if (r != 0 && r != -EIO)
			abort();
	}
	if (image_read(im, buf, 1, size) != -EINVAL)
		abort(); /* past the end */
	image_close(im);
}

static void on_disk(const uint8_t *data, size_t size)
{
	char dir[80];
	unsigned six = 0, out[64], usable[4], nusable = 0;
	struct repo *r;
	struct dirent *de;
	DIR *d;
	int repo;

	if (!scratch_ready())
		abort();
	rm_rf(base_fd, "repo");
	if (mkdirat(base_fd, "repo", 0755) < 0 ||
	    (repo = openat(base_fd, "repo", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		abort();
	build(repo, data, size);
	/* What the repository must list: its six-digit names, whatever they are. */
	d = fdopendir(dup(repo));
	while (d && (de = readdir(d)))
		six += six_digits(de->d_name);
	if (d)
		closedir(d);
	close(repo);

	snprintf(dir, sizeof(dir), "%s/repo", base);
	if (repo_open(dir, REPO_WRITE, 65536, &r) == 0) {
		if (r->n != six)
			abort(); /* a backup from a name that is not six digits, or one missed */
		for (unsigned k = 0; k < r->n && k < 64; k++) {
			const struct backup_info *b = &r->b[k];
			struct repo_entry *e = NULL;
			char *why = NULL;
			uint64_t n = 0;
			int len, fd;

			if (b->error)
				continue;
			if (nusable < 4)
				usable[nusable++] = k;
			len = repo_chain(r, k, out);
			if (len < 1 || out[len - 1] != k || !r->b[out[0]].full)
				abort();
			if (repo_read_index(r, k, &why, &e, &n) == 0)
				for (uint64_t i = 0; i < n; i++)
					if (e[i].block >= block_count(b->size, b->block_size) ||
					    (e[i].offset != REPO_ZERO_BLOCK && e[i].offset > b->data_size))
						abort(); /* an entry outside the image or the data got through */
			free(e);
			free(why);
			why = NULL;
			fd = repo_open_data(r, k, &why);
			if (fd >= 0)
				close(fd);
			free(why);
		}
		repo_close(r);
		/* After the close: the image takes the shared lock. */
		for (unsigned i = 0; i < nusable; i++)
			open_image(dir, usable[i]);
		open_image(dir, -1);
	}
	if (!outside_intact())
		abort(); /* the repository reached out of its directory */
}

/* ---- block lists ---- */

#define BL_MAX_BLOCKS 4096

/* Extents of 4 bytes each (offset and length in 512-byte units, 16 bits
 * each), in the order given; the image and block size from the first bytes. */
static void block_list(const uint8_t *data, size_t size)
{
	static uint8_t touched[BL_MAX_BLOCKS];
	struct block_list l = { 0 };
	uint32_t bs;
	uint64_t img, nblocks, sum = 0;

	if (size < 3)
		return;
	bs = 512u << (data[0] % 8); /* 512 B to 64 KiB */
	img = ((uint64_t)(data[1] | data[2] << 8) + 1) * 512;
	nblocks = block_count(img, bs);
	if (nblocks > BL_MAX_BLOCKS)
		return;
	memset(touched, 0, nblocks);
	data += 3;
	size -= 3;
	for (; size >= 4; data += 4, size -= 4) {
		uint64_t off = (uint64_t)(data[0] | data[1] << 8) * 512, len = (uint64_t)(data[2] | data[3] << 8) * 512;
		uint64_t last_first = l.n ? l.v[l.n - 1].first : 0;
		int r = block_list_add(&l, off, len, bs, img);

		if (r == -EINVAL && !(l.n && off / bs < last_first))
			abort(); /* refused an extent in order */
		if (r < 0)
			continue;
		if (len && off < img)
			for (uint64_t b = off / bs; b < block_count(off + (len < img - off ? len : img - off), bs); b++)
				touched[b] = 1;
	}
	/* Sorted runs, apart (touching ones merged), inside the image, and
	 * holding exactly the blocks the extents touched. */
	for (size_t i = 0; i < l.n; i++) {
		if (!l.v[i].count || l.v[i].first + l.v[i].count > nblocks ||
		    (i > 0 && l.v[i].first <= l.v[i - 1].first + l.v[i - 1].count))
			abort();
		for (uint64_t b = l.v[i].first; b < l.v[i].first + l.v[i].count; b++) {
			if (!touched[b])
				abort();
			touched[b] = 2;
		}
		sum += l.v[i].count;
	}
	for (uint64_t b = 0; b < nblocks; b++)
		if (touched[b] == 1)
			abort(); /* a touched block that no run holds */
	if (sum != l.blocks)
		abort();
	block_list_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0]) {
	case 0:
		one_manifest(data + 1, size - 1);
		break;
	case 1:
		chain(data + 1, size - 1);
		break;
	case 2:
		repo_json(data + 1, size - 1);
		break;
	case 3:
		on_disk(data + 1, size - 1);
		break;
	case 4:
		block_list(data + 1, size - 1);
		break;
	default:
		one_index(data[0], data + 1, size - 1);
	}
	return 0;
}
