/* The backup repository, version 2: see repo2.h and docs/backup-repo.md.
 * This file owns the format of every object (repo.json, manifests, block
 * maps, chunk indexes, packs) and the order in which a backup stores them. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <json-c/json.h>

#include "backup/block_list.h"
#include "backup/chunk_table.h"
#include "backup/repo2.h"
#include "backup/util.h"
#include "common/io.h"

#define FORMAT_NAME "bdfilter-backup"
#define MAP_MAGIC "BDFMAP02"
#define MAP_HEADER 32
#define INDEX_MAGIC "BDFCIX02"
#define INDEX_HEADER 16
#define INDEX_ENTRY 96
#define MAX_BLOCK_SIZE (64u << 20)
#define MANIFEST_MAX (1u << 20)
/* An index object lists at most this many bytes of entries (50 million
 * chunks: 3 TiB of new data at 64 KiB blocks in one backup). */
#define INDEX_MAX ((size_t)4 << 30)

void repo2_crash_point(const char *name)
{
	const char *want = getenv("BDFILTER_BACKUP_CRASH");

	if (want && strcmp(want, name) == 0) {
		fprintf(stderr, "bdfilter-backup: crash point %s\n", name);
		raise(SIGKILL);
	}
}

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

static bool valid_block_size(int64_t bs)
{
	return bs >= 4096 && bs <= MAX_BLOCK_SIZE && (bs & (bs - 1)) == 0;
}

bool repo2_zero_id(const uint8_t id[CHUNK_ID_LEN])
{
	static const uint8_t zero[CHUNK_ID_LEN];

	return memcmp(id, zero, CHUNK_ID_LEN) == 0;
}

void repo2_manifest_key(unsigned num, char key[40])
{
	snprintf(key, 40, "backups/%06u.json", num);
}

void repo2_pack_key(struct repo2 *r, uint32_t pack, char key[80])
{
	char hex[65];

	pthread_mutex_lock(&r->packs_lock);
	seal_hex(r->packs[pack], 32, hex);
	pthread_mutex_unlock(&r->packs_lock);
	snprintf(key, 80, "packs/%.2s/%s", hex, hex);
}

/* ---- repo.json ---- */

int repo2_parse_repo_json(const char *text, struct repo2 *r, struct json_object **encryption, int *level)
{
	struct json_object *o = json_tokener_parse(text), *comp, *enc;
	const char *format;
	int64_t version, bs;
	int e = -EINVAL;

	*encryption = NULL;
	if (!o || !json_object_is_type(o, json_type_object))
		goto out;
	format = bk_json_str(o, "format");
	version = bk_json_uint(o, "version");
	bs = bk_json_uint(o, "block_size");
	if (!format || strcmp(format, FORMAT_NAME) || version != REPO2_VERSION || !valid_block_size(bs))
		goto out;
	r->block_size = (uint32_t)bs;
	*level = 0;
	if (json_object_object_get_ex(o, "compression", &comp) && comp) {
		const char *alg = bk_json_str(comp, "algorithm");
		int64_t lv = bk_json_uint(comp, "level");

		if (!alg || strcmp(alg, "zstd") || lv < 1 || lv > 19)
			goto out;
		*level = (int)lv;
	}
	if (json_object_object_get_ex(o, "encryption", &enc) && enc) {
		if (!json_object_is_type(enc, json_type_object))
			goto out;
		*encryption = json_object_get(enc);
	}
	e = 0;
out:
	json_object_put(o);
	return e;
}

/* "version" of a repo.json, or -1. */
static int64_t json_version(const char *text)
{
	struct json_object *o = json_tokener_parse(text);
	const char *format;
	int64_t v = -1;

	if (o && json_object_is_type(o, json_type_object) && (format = bk_json_str(o, "format")) &&
	    !strcmp(format, FORMAT_NAME))
		v = bk_json_uint(o, "version");
	json_object_put(o);
	return v;
}

static int get_text(struct store *st, const char *key, size_t max, char **text)
{
	void *buf;
	size_t len;
	int e = store_get(st, key, &buf, &len);

	if (e < 0)
		return e;
	if (len > max) {
		free(buf);
		return -EFBIG;
	}
	*text = realloc(buf, len + 1);
	if (!*text) {
		free(buf);
		return -ENOMEM;
	}
	(*text)[len] = 0;
	if (strlen(*text) != len) {
		free(*text);
		return -EINVAL;
	}
	return 0;
}

int repo_version(const char *url)
{
	struct store *st;
	char *text;
	int64_t v;
	int e;

	if (!store_is_s3(url) && access(url, F_OK) < 0)
		return 0;
	if ((e = store_open(url, false, &st)) < 0)
		return e;
	e = get_text(st, "repo.json", 65536, &text);
	store_close(st);
	if (e == -ENOENT)
		return 0;
	if (e < 0) {
		if (e != -EIO)
			bk_error("%s: repo.json: %s", url, strerror(-e));
		return e;
	}
	v = json_version(text);
	free(text);
	if (v != 1 && v != 2) {
		bk_error("%s: repo.json: not a version 1 or 2 bdfilter-backup repository", url);
		return -EINVAL;
	}
	return (int)v;
}

static int create_repo_json(struct repo2 *r, const struct repo2_create *c, const char *secret, size_t secret_len)
{
	struct json_object *o = json_object_new_object(), *enc = NULL;
	const char *text;
	int e;

	if (!valid_block_size(c->block_size)) {
		bk_error("block size %u: a power of two from 4096 to %u is needed", c->block_size, MAX_BLOCK_SIZE);
		json_object_put(o);
		return -EINVAL;
	}
	if (secret)
		e = seal_create_keyed(secret, secret_len, SEAL_KDF_ITERATIONS_DEFAULT, c->level, &r->seal, &enc);
	else
		e = seal_new_plain(c->level, &r->seal);
	if (e < 0) {
		json_object_put(o);
		return e;
	}
	r->block_size = c->block_size;
	json_object_object_add(o, "format", json_object_new_string(FORMAT_NAME));
	json_object_object_add(o, "version", json_object_new_int(REPO2_VERSION));
	json_object_object_add(o, "block_size", json_object_new_int64(c->block_size));
	if (c->level > 0) {
		struct json_object *comp = json_object_new_object();

		json_object_object_add(comp, "algorithm", json_object_new_string("zstd"));
		json_object_object_add(comp, "level", json_object_new_int(c->level));
		json_object_object_add(o, "compression", comp);
	} else {
		json_object_object_add(o, "compression", NULL);
	}
	json_object_object_add(o, "encryption", enc);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	e = store_put(r->st, "repo.json", text, strlen(text));
	json_object_put(o);
	return e;
}

/* ---- manifests ---- */

void repo2_backup_clear(struct repo2_backup *b)
{
	free(b->device);
	free(b->from);
	free(b->generation);
	free(b->bitmap);
	free(b->time);
	free(b->map);
	free(b->index);
	free(b->error);
	*b = (struct repo2_backup){ .num = b->num, .parent = -1, .changes_number = -1 };
}

static void set_error(struct repo2_backup *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct repo2_backup *b, const char *fmt, ...)
{
	unsigned num = b->num;
	va_list ap;

	repo2_backup_clear(b);
	va_start(ap, fmt);
	b->error = bk_vformat(fmt, ap);
	va_end(ap);
	b->num = num;
}

static bool valid_object_key(const char *key, const char *dir)
{
	size_t n = strlen(dir);

	if (!key || strncmp(key, dir, n) || strlen(key) != n + 64 || !store_key_valid(key))
		return false;
	for (const char *p = key + n; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static int64_t parse_time(const char *s)
{
	struct tm tm = { 0 };
	const char *end;

	if (!s || !(end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm)) || *end)
		return -1;
	return (int64_t)timegm(&tm);
}

void repo2_parse_manifest(struct repo2_backup *b, const char *text, const char *name)
{
	struct json_object *o = json_tokener_parse(text), *v;
	const char *kind, *s;
	int64_t x;

	repo2_backup_clear(b);
	if (!o || !json_object_is_type(o, json_type_object)) {
		set_error(b, "backup %u: %s is not JSON", b->num, name);
		goto out;
	}
#define FIELD_ERROR(field)                                                                     \
	do {                                                                                   \
		set_error(b, "backup %u: %s: \"%s\" is missing or wrong", b->num, name, field); \
		goto out;                                                                      \
	} while (0)
	if (bk_json_uint(o, "backup") != b->num)
		FIELD_ERROR("backup");
	if (!(kind = bk_json_str(o, "kind")) || (strcmp(kind, "full") && strcmp(kind, "incremental")))
		FIELD_ERROR("kind");
	b->full = !strcmp(kind, "full");
	if (!(s = bk_json_str(o, "device")) || !*s || !(b->device = strdup(s)))
		FIELD_ERROR("device");
	if (!json_object_object_get_ex(o, "parent", &v) || (v && !json_object_is_type(v, json_type_int)))
		FIELD_ERROR("parent");
	x = v ? json_object_get_int64(v) : -1;
	if (b->full != (x < 0) || x >= (int64_t)b->num)
		FIELD_ERROR("parent");
	b->parent = (int)x;
	if (!(s = bk_json_str(o, "from")) || !(b->from = strdup(s)))
		FIELD_ERROR("from");
	if ((x = bk_json_uint(o, "size")) < 0)
		FIELD_ERROR("size");
	b->size = (uint64_t)x;
	if (!valid_block_size(x = bk_json_uint(o, "block_size")))
		FIELD_ERROR("block_size");
	b->block_size = (uint32_t)x;
	if ((s = bk_json_str(o, "generation")) && !(b->generation = strdup(s)))
		FIELD_ERROR("generation");
	b->changes_number = bk_json_uint(o, "changes_number");
	if ((s = bk_json_str(o, "bitmap")) && !(b->bitmap = strdup(s)))
		FIELD_ERROR("bitmap");
	if (!(s = bk_json_str(o, "time")) || (b->unix_time = parse_time(s)) < 0 || !(b->time = strdup(s)))
		FIELD_ERROR("time");
	if ((x = bk_json_uint(o, "blocks")) < 0 || (uint64_t)x != (b->size + b->block_size - 1) / b->block_size)
		FIELD_ERROR("blocks");
	b->blocks = (uint64_t)x;
	if ((x = bk_json_uint(o, "data_blocks")) < 0 || (uint64_t)x > b->blocks)
		FIELD_ERROR("data_blocks");
	b->data_blocks = (uint64_t)x;
	b->read_blocks = bk_json_uint(o, "read_blocks") < 0 ? 0 : (uint64_t)bk_json_uint(o, "read_blocks");
	b->new_chunks = bk_json_uint(o, "new_chunks") < 0 ? 0 : (uint64_t)bk_json_uint(o, "new_chunks");
	b->new_bytes = bk_json_uint(o, "new_bytes") < 0 ? 0 : (uint64_t)bk_json_uint(o, "new_bytes");
	b->stored_bytes = bk_json_uint(o, "stored_bytes") < 0 ? 0 : (uint64_t)bk_json_uint(o, "stored_bytes");
	if (!valid_object_key(s = bk_json_str(o, "map"), "maps/") || !(b->map = strdup(s)))
		FIELD_ERROR("map");
	if (json_object_object_get_ex(o, "index", &v) && v &&
	    (!valid_object_key(s = bk_json_str(o, "index"), "index/") || !(b->index = strdup(s))))
		FIELD_ERROR("index");
#undef FIELD_ERROR
out:
	json_object_put(o);
}

static void load_manifest(struct repo2 *r, struct seal_ctx *sc, struct repo2_backup *b)
{
	char key[40], *text = NULL;
	void *buf;
	size_t len;
	int e;

	repo2_manifest_key(b->num, key);
	if ((e = store_get(r->st, key, &buf, &len)) < 0) {
		set_error(b, "backup %u: %s: %s", b->num, key, e == -ENOENT ? "gone" : strerror(-e));
		return;
	}
	if (len > MANIFEST_MAX) {
		free(buf);
		set_error(b, "backup %u: %s: too large", b->num, key);
		return;
	}
	if (seal_encrypted(r->seal)) {
		const char *why = NULL;
		void *plain;
		size_t plen;

		e = seal_open_meta(sc, key, buf, len, MANIFEST_MAX, &plain, &plen, &why);
		free(buf);
		if (e < 0) {
			set_error(b, "backup %u: %s %s", b->num, key, why ? why : strerror(-e));
			return;
		}
		buf = plain;
		len = plen;
	}
	if (!(text = realloc(buf, len + 1))) {
		free(buf);
		set_error(b, "out of memory");
		return;
	}
	text[len] = 0;
	if (strlen(text) != len)
		set_error(b, "backup %u: %s holds a NUL byte", b->num, key);
	else
		repo2_parse_manifest(b, text, key);
	free(text);
}

static int write_manifest(struct repo2 *r, struct seal_ctx *sc, const struct repo2_backup *b)
{
	struct json_object *o = json_object_new_object();
	const char *text;
	char key[40];
	void *sealed = NULL;
	size_t len;
	int e;

	json_object_object_add(o, "backup", json_object_new_int64(b->num));
	json_object_object_add(o, "device", json_object_new_string(b->device));
	json_object_object_add(o, "kind", json_object_new_string(b->full ? "full" : "incremental"));
	json_object_object_add(o, "parent", b->parent >= 0 ? json_object_new_int64(b->parent) : NULL);
	json_object_object_add(o, "from", json_object_new_string(b->from));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)b->size));
	json_object_object_add(o, "block_size", json_object_new_int64(b->block_size));
	json_object_object_add(o, "generation", b->generation ? json_object_new_string(b->generation) : NULL);
	json_object_object_add(o, "changes_number",
			       b->changes_number >= 0 ? json_object_new_int64(b->changes_number) : NULL);
	json_object_object_add(o, "bitmap", b->bitmap ? json_object_new_string(b->bitmap) : NULL);
	json_object_object_add(o, "time", json_object_new_string(b->time));
	json_object_object_add(o, "blocks", json_object_new_int64((int64_t)b->blocks));
	json_object_object_add(o, "data_blocks", json_object_new_int64((int64_t)b->data_blocks));
	json_object_object_add(o, "read_blocks", json_object_new_int64((int64_t)b->read_blocks));
	json_object_object_add(o, "new_chunks", json_object_new_int64((int64_t)b->new_chunks));
	json_object_object_add(o, "new_bytes", json_object_new_int64((int64_t)b->new_bytes));
	json_object_object_add(o, "stored_bytes", json_object_new_int64((int64_t)b->stored_bytes));
	json_object_object_add(o, "map", json_object_new_string(b->map));
	json_object_object_add(o, "index", b->index ? json_object_new_string(b->index) : NULL);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	repo2_manifest_key(b->num, key);
	if (seal_encrypted(r->seal)) {
		if ((e = seal_meta(sc, key, text, strlen(text), &sealed, &len)) == 0)
			e = store_put(r->st, key, sealed, len);
		free(sealed);
	} else {
		e = store_put(r->st, key, text, strlen(text));
	}
	json_object_put(o);
	return e;
}

struct scan {
	unsigned *nums;
	size_t n, cap;
};

static int scan_manifest(void *opaque, const char *key, uint64_t size)
{
	struct scan *sc = opaque;
	const char *p = key + strlen("backups/");
	unsigned long v;
	char *end;

	(void)size;
	/* Only names this version writes: six or more digits and ".json". */
	if (strlen(p) < 11 || strspn(p, "0123456789") < 6 || strcmp(p + strspn(p, "0123456789"), ".json"))
		return 0;
	errno = 0;
	v = strtoul(p, &end, 10);
	if (errno || v > INT32_MAX)
		return 0;
	if (sc->n == sc->cap) {
		unsigned *nv = realloc(sc->nums, (sc->cap ? sc->cap * 2 : 64) * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		sc->nums = nv;
		sc->cap = sc->cap ? sc->cap * 2 : 64;
	}
	sc->nums[sc->n++] = (unsigned)v;
	return 0;
}

static int cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

	return x < y ? -1 : x > y;
}

static int read_manifests(struct repo2 *r)
{
	struct scan sc = { 0 };
	struct seal_ctx *ctx;
	int e;

	if ((e = store_list(r->st, "backups/", scan_manifest, &sc)) < 0) {
		free(sc.nums);
		return e;
	}
	if (sc.n > 1) /* qsort(NULL, 0, ...) is undefined: a new repository has no manifest */
		qsort(sc.nums, sc.n, sizeof(*sc.nums), cmp_unsigned);
	if (!(r->b = calloc(sc.n ? sc.n : 1, sizeof(*r->b))) || seal_ctx_new(r->seal, &ctx) < 0) {
		free(sc.nums);
		return -ENOMEM;
	}
	for (size_t i = 0; i < sc.n; i++) {
		r->b[i] = (struct repo2_backup){ .num = sc.nums[i], .parent = -1, .changes_number = -1 };
		load_manifest(r, ctx, &r->b[i]);
	}
	r->n = (unsigned)sc.n;
	seal_ctx_free(ctx);
	free(sc.nums);
	return 0;
}

/* ---- opening ---- */

/* A new repository's directory or prefix holds nothing but its lock. */
static int refuse_other(void *opaque, const char *key, uint64_t size)
{
	(void)opaque;
	(void)size;
	return strcmp(key, "lock") && strcmp(key, "lock.append") && strncmp(key, "locks/", 6) ? 1 : 0;
}

int repo2_open(const char *url, enum store_lock_mode mode, const struct repo2_create *create,
	       const char *key_file, struct repo2 **out)
{
	struct repo2 *r = calloc(1, sizeof(*r));
	struct json_object *enc = NULL;
	char *text = NULL, *secret = NULL;
	size_t secret_len = 0;
	int e, level = 0;

	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->packs_lock, NULL);
	if ((e = store_open(url, create != NULL, &r->st)) < 0)
		goto fail;
	r->url = r->st->url;
	if ((e = store_lock(r->st, mode)) < 0)
		goto fail;
	if (key_file && (e = seal_read_key_file(key_file, &secret, &secret_len)) < 0)
		goto fail;
	e = get_text(r->st, "repo.json", 65536, &text);
	if (e == -ENOENT && create) {
		if ((e = store_list(r->st, "", refuse_other, NULL)) != 0) {
			if (e > 0) {
				bk_error("%s is not empty and not a repository: give a new or empty directory", url);
				e = -EEXIST;
			}
			goto fail;
		}
		if ((e = create_repo_json(r, create, secret, secret_len)) < 0)
			goto fail;
	} else if (e < 0) {
		if (e == -ENOENT)
			bk_error("%s: not a bdfilter-backup repository (no repo.json)", url);
		else if (e != -EIO)
			bk_error("%s: repo.json: %s", url, strerror(-e));
		goto fail;
	} else {
		if (repo2_parse_repo_json(text, r, &enc, &level) < 0) {
			e = json_version(text) == 1 ? -EPROTO : -EINVAL;
			if (e == -EPROTO)
				bk_error("%s is a version 1 repository: this command needs version 2", url);
			else
				bk_error("%s: repo.json is not one of bdfilter-backup's version 2", url);
			goto fail;
		}
		if (enc && !secret) {
			bk_error("%s is encrypted: give its key with --key-file", url);
			e = -EACCES;
			goto fail;
		}
		if (!enc && secret) {
			bk_error("%s is not encrypted: --key-file is for an encrypted repository", url);
			e = -EINVAL;
			goto fail;
		}
		e = enc ? seal_new_keyed(secret, secret_len, enc, level, &r->seal) : seal_new_plain(level, &r->seal);
		if (e < 0)
			goto fail;
	}
	if ((e = read_manifests(r)) < 0)
		goto fail;
	json_object_put(enc);
	free(text);
	if (secret) {
		memset(secret, 0, secret_len);
		free(secret);
	}
	*out = r;
	return 0;
fail:
	json_object_put(enc);
	free(text);
	if (secret) {
		memset(secret, 0, secret_len);
		free(secret);
	}
	repo2_close(r);
	return e;
}

void repo2_close(struct repo2 *r)
{
	if (!r)
		return;
	for (unsigned i = 0; i < r->n; i++)
		repo2_backup_clear(&r->b[i]);
	free(r->b);
	chunk_table_free(r->chunks);
	free(r->packs);
	for (size_t i = 0; i < r->n_index; i++)
		free(r->index_keys[i]);
	free(r->index_keys);
	seal_free(r->seal);
	store_close(r->st);
	pthread_mutex_destroy(&r->packs_lock);
	free(r);
}

const struct repo2_backup *repo2_backup(struct repo2 *r, unsigned num)
{
	for (unsigned i = 0; i < r->n; i++) {
		if (r->b[i].num != num)
			continue;
		if (r->b[i].error) {
			bk_error("%s", r->b[i].error);
			return NULL;
		}
		return &r->b[i];
	}
	bk_error("%s has no backup %u", r->url, num);
	return NULL;
}

const struct repo2_backup *repo2_last(struct repo2 *r, const char *device)
{
	for (unsigned i = r->n; i-- > 0;)
		if (!r->b[i].error && (!device || !strcmp(r->b[i].device, device)))
			return &r->b[i];
	return NULL;
}

/* ---- content-addressed metadata objects ---- */

/* Store DATA sealed under DIR/<sha256 of the sealed bytes>; *KEY gets the
 * name. The name is not known before sealing, so the sealing's associated
 * data is DIR alone. */
static int put_addressed(struct repo2 *r, struct seal_ctx *sc, const char *dir, const void *data, size_t len,
			 char **key)
{
	uint8_t h[32];
	char hex[65];
	void *sealed;
	size_t slen;
	int e;

	if ((e = seal_meta(sc, dir, data, len, &sealed, &slen)) < 0)
		return e;
	seal_sha256(sealed, slen, h);
	seal_hex(h, 32, hex);
	if (!(*key = bk_format("%s%s", dir, hex))) {
		free(sealed);
		return -ENOMEM;
	}
	e = store_put(r->st, *key, sealed, slen);
	free(sealed);
	if (e < 0) {
		free(*key);
		*key = NULL;
	}
	return e;
}

static int get_addressed(struct repo2 *r, struct seal_ctx *sc, const char *key, const char *dir, size_t max_len,
			 void **out, size_t *out_len, char **why)
{
	uint8_t h[32], want[32];
	const char *w = NULL;
	void *sealed;
	size_t slen;
	int e;

	if ((e = store_get(r->st, key, &sealed, &slen)) < 0) {
		report(why, "%s: %s", key, e == -ENOENT ? "missing" : strerror(-e));
		return e == -ENOENT ? -ENOENT : -EIO;
	}
	seal_sha256(sealed, slen, h);
	if (seal_unhex(key + strlen(dir), want, 32) < 0 || memcmp(h, want, 32) != 0) {
		free(sealed);
		report(why, "%s: damaged (its bytes do not match its name)", key);
		return -EBADMSG;
	}
	e = seal_open_meta(sc, dir, sealed, slen, max_len, out, out_len, &w);
	free(sealed);
	if (e < 0)
		report(why, "%s: %s", key, w ? w : strerror(-e));
	return e;
}

/* ---- block maps ---- */

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}
static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}
static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}
static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

int repo2_read_map(struct repo2 *r, const struct repo2_backup *b, struct seal_ctx *sc, char **why,
		   uint8_t (**map)[CHUNK_ID_LEN])
{
	uint8_t *buf;
	size_t len;
	int e;

	if ((e = get_addressed(r, sc, b->map, "maps/", MAP_HEADER + b->blocks * CHUNK_ID_LEN, (void **)&buf, &len,
				why)) < 0)
		return e;
	if (len < MAP_HEADER || memcmp(buf, MAP_MAGIC, 8) || get_le64(buf + 8) != b->size ||
	    get_le32(buf + 16) != b->block_size || get_le64(buf + 24) != b->blocks ||
	    len - MAP_HEADER != b->blocks * CHUNK_ID_LEN) {
		free(buf);
		report(why, "backup %u: %s does not match its manifest", b->num, b->map);
		return -EBADMSG;
	}
	memmove(buf, buf + MAP_HEADER, len - MAP_HEADER);
	*map = (uint8_t(*)[CHUNK_ID_LEN])buf;
	return 0;
}

/* ---- chunk indexes ---- */

int repo2_parse_index(const void *buf, size_t len,
		      void (*fn)(void *opaque, const uint8_t id[CHUNK_ID_LEN], const uint8_t pack[32],
				 const struct chunk_loc *loc),
		      void *opaque)
{
	const uint8_t *p = buf;
	uint64_t n;

	if (len < INDEX_HEADER || memcmp(p, INDEX_MAGIC, 8) || (n = get_le64(p + 8)) != (len - INDEX_HEADER) / INDEX_ENTRY ||
	    (len - INDEX_HEADER) % INDEX_ENTRY)
		return -EBADMSG;
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *e = p + INDEX_HEADER + i * INDEX_ENTRY;
		struct chunk_loc loc = {
			.offset = get_le64(e + 64),
			.stored_len = get_le32(e + 72),
			.raw_len = get_le32(e + 76),
		};

		memcpy(loc.check, e + 80, SEAL_CHECK_LEN);

		if (loc.stored_len == 0 || loc.raw_len == 0 || loc.raw_len > MAX_BLOCK_SIZE ||
		    loc.stored_len > MAX_BLOCK_SIZE + SEAL_OVERHEAD || loc.offset > UINT32_MAX)
			return -EBADMSG;
		fn(opaque, e, e + 32, &loc);
	}
	return 0;
}

/* The number of pack ID in r->packs, added if new; UINT32_MAX when out of
 * memory. A linear search from the end: packs are met in runs. */
static uint32_t pack_number(struct repo2 *r, const uint8_t id[32])
{
	uint32_t n;

	pthread_mutex_lock(&r->packs_lock);
	for (n = r->n_packs; n-- > 0;)
		if (!memcmp(r->packs[n], id, 32))
			goto out;
	if (r->n_packs == r->packs_cap) {
		uint32_t cap = r->packs_cap ? r->packs_cap * 2 : 256;
		void *v = realloc(r->packs, cap * sizeof(*r->packs));

		if (!v) {
			n = UINT32_MAX;
			goto out;
		}
		r->packs = v;
		r->packs_cap = cap;
	}
	memcpy(r->packs[r->n_packs], id, 32);
	n = r->n_packs++;
out:
	pthread_mutex_unlock(&r->packs_lock);
	return n;
}

struct load {
	struct repo2 *r;
	int err;
};

static void load_entry(void *opaque, const uint8_t id[CHUNK_ID_LEN], const uint8_t pack[32],
		       const struct chunk_loc *loc)
{
	struct load *l = opaque;
	struct chunk_loc c = *loc;

	if ((c.pack = pack_number(l->r, pack)) == UINT32_MAX || chunk_table_put(l->r->chunks, id, &c) < 0)
		l->err = -ENOMEM;
}

static int list_index(void *opaque, const char *key, uint64_t size)
{
	struct repo2 *r = opaque;
	char **v;

	(void)size;
	if (!valid_object_key(key, "index/"))
		return 0;
	if (!(v = realloc(r->index_keys, (r->n_index + 1) * sizeof(*v))))
		return -ENOMEM;
	r->index_keys = v;
	if (!(v[r->n_index] = strdup(key)))
		return -ENOMEM;
	r->n_index++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int repo2_load_chunks(struct repo2 *r, struct seal_ctx *sc, bool strict)
{
	int e;

	if (r->chunks)
		return 0;
	if (!(r->chunks = chunk_table_new()))
		return -ENOMEM;
	if ((e = store_list(r->st, "index/", list_index, r)) < 0)
		return e;
	if (r->n_index > 1)
		qsort(r->index_keys, r->n_index, sizeof(*r->index_keys), cmp_str);
	for (size_t i = 0; i < r->n_index; i++) {
		struct load l = { r, 0 };
		void *buf;
		size_t len;

		e = get_addressed(r, sc, r->index_keys[i], "index/", INDEX_MAX, &buf, &len, NULL);
		if (e == 0) {
			e = repo2_parse_index(buf, len, load_entry, &l);
			free(buf);
			if (e < 0)
				bk_error("%s: %s: not a chunk index", r->url, r->index_keys[i]);
			else
				e = l.err;
		}
		if (e < 0 && (strict || e == -ENOMEM))
			return e;
	}
	return 0;
}

struct each {
	struct repo2 *r;
	void (*fn)(void *opaque, const uint8_t id[CHUNK_ID_LEN], const struct chunk_loc *loc);
	void *opaque;
	int err;
};

static void each_entry(void *opaque, const uint8_t id[CHUNK_ID_LEN], const uint8_t pack[32],
		       const struct chunk_loc *loc)
{
	struct each *e = opaque;
	struct chunk_loc c = *loc;

	if ((c.pack = pack_number(e->r, pack)) == UINT32_MAX)
		e->err = -ENOMEM;
	else
		e->fn(e->opaque, id, &c);
}

int repo2_each_index_entry(struct repo2 *r, struct seal_ctx *sc,
			   void (*fn)(void *opaque, const uint8_t id[CHUNK_ID_LEN], const struct chunk_loc *loc),
			   void *opaque)
{
	for (size_t i = 0; i < r->n_index; i++) {
		struct each ea = { r, fn, opaque, 0 };
		void *buf;
		size_t len;
		int e = get_addressed(r, sc, r->index_keys[i], "index/", INDEX_MAX, &buf, &len, NULL);

		if (e < 0)
			return e;
		e = repo2_parse_index(buf, len, each_entry, &ea);
		free(buf);
		if (e < 0) {
			bk_error("%s: %s: not a chunk index", r->url, r->index_keys[i]);
			return e;
		}
		if (ea.err < 0)
			return ea.err;
	}
	return 0;
}

int repo2_find_chunk(struct repo2 *r, const uint8_t id[CHUNK_ID_LEN], struct chunk_loc *loc)
{
	int e = chunk_table_get(r->chunks, id, loc);

	return e == 0 && loc->pack == CHUNK_PENDING ? -ENOENT : e;
}

bool repo2_claim_chunk(struct repo2 *r, const uint8_t id[CHUNK_ID_LEN])
{
	return chunk_table_claim(r->chunks, id);
}

int repo2_read_chunk(struct repo2 *r, struct seal_ctx *sc, const uint8_t id[CHUNK_ID_LEN], void *out,
		     size_t raw_len, bool deep, char **why)
{
	struct chunk_loc loc;
	char key[80], hex[2 * CHUNK_ID_LEN + 1];
	const char *w = NULL;
	void *sealed;
	int e;

	seal_hex(id, CHUNK_ID_LEN, hex);
	if (repo2_find_chunk(r, id, &loc) < 0) {
		report(why, "chunk %.16s: in no index (missing)", hex);
		return -ENOENT;
	}
	if (loc.raw_len != raw_len) {
		report(why, "chunk %.16s: %u bytes in the index, %zu expected", hex, loc.raw_len, raw_len);
		return -EBADMSG;
	}
	if (!(sealed = malloc(loc.stored_len)))
		return -ENOMEM;
	repo2_pack_key(r, loc.pack, key);
	e = store_get_range(r->st, key, loc.offset, loc.stored_len, sealed);
	if (e < 0) {
		free(sealed);
		report(why, "chunk %.16s: %s: %s", hex, key, e == -ENOENT ? "pack missing" : "cannot be read");
		return e == -ENOENT ? -ENOENT : -EIO;
	}
	e = seal_open_chunk(sc, id, sealed, loc.stored_len, out, raw_len, deep ? NULL : loc.check, &w);
	free(sealed);
	if (e < 0)
		report(why, "chunk %.16s in %s: %s", hex, key, w ? w : strerror(-e));
	return e;
}

/* A fetch of adjacent chunks is cut at this size. */
#define FETCH_MAX (8u << 20)

int repo2_read_blocks(struct repo2 *r, struct seal_ctx *sc, const uint8_t (*map)[CHUNK_ID_LEN], uint64_t size,
		      uint64_t first, uint64_t count, char *out, char **why)
{
	uint32_t bs = r->block_size;
	uint64_t b = first, end = first + count;
	uint8_t *sealed = NULL;
	size_t sealed_cap = 0;
	int e = 0;

	while (b < end && e == 0) {
		struct chunk_loc loc, next;
		uint64_t g = b + 1, blk_end;
		size_t total;
		char key[80], hex[2 * CHUNK_ID_LEN + 1];
		uint8_t *p;

		if (repo2_zero_id(map[b])) {
			memset(out + (b - first) * bs, 0, block_length(b, size, bs));
			b++;
			continue;
		}
		if (repo2_find_chunk(r, map[b], &loc) < 0) {
			seal_hex(map[b], CHUNK_ID_LEN, hex);
			report(why, "block %" PRIu64 ": chunk %.16s is in no index (missing)", b, hex);
			e = -ENOENT;
			break;
		}
		if (loc.raw_len != block_length(b, size, bs)) {
			report(why, "block %" PRIu64 ": its chunk holds %u bytes, not %u", b, loc.raw_len,
			       block_length(b, size, bs));
			e = -EBADMSG;
			break;
		}
		total = loc.stored_len;
		blk_end = loc.offset + loc.stored_len;
		while (g < end && !repo2_zero_id(map[g]) && repo2_find_chunk(r, map[g], &next) == 0 &&
		       next.pack == loc.pack && next.offset == blk_end && next.raw_len == block_length(g, size, bs) &&
		       total + next.stored_len <= FETCH_MAX) {
			total += next.stored_len;
			blk_end += next.stored_len;
			g++;
		}
		if (sealed_cap < total) {
			free(sealed);
			if (!(sealed = malloc(total))) {
				e = -ENOMEM;
				break;
			}
			sealed_cap = total;
		}
		repo2_pack_key(r, loc.pack, key);
		if ((e = store_get_range(r->st, key, loc.offset, total, sealed)) < 0) {
			report(why, "block %" PRIu64 ": %s: %s", b, key, e == -ENOENT ? "pack missing" : "cannot be read");
			e = e == -ENOENT ? -ENOENT : -EIO;
			break;
		}
		p = sealed;
		for (uint64_t k = b; k < g; k++) {
			const char *w = NULL;

			repo2_find_chunk(r, map[k], &next);
			e = seal_open_chunk(sc, map[k], p, next.stored_len, out + (k - first) * bs, next.raw_len,
					    next.check, &w);
			if (e < 0) {
				seal_hex(map[k], CHUNK_ID_LEN, hex);
				report(why, "block %" PRIu64 ": chunk %.16s in %s %s", k, hex, key, w ? w : strerror(-e));
				break;
			}
			p += next.stored_len;
		}
		b = g;
	}
	free(sealed);
	return e;
}

/* ---- writing ---- */

/* A stored pack's buffer goes back to the free list, or is freed. */
static void put_free_buf(struct pack_writer *w, char *buf)
{
	if (w->n_free < PACK_BUFFERS)
		w->free_bufs[w->n_free++] = buf;
	else
		free(buf);
}

/* An uploader: stores the packs flush_pack queues, while the writer goes on
 * filling the next; several at once (each waits for its fsync, or for the
 * server). */
static void *uploader_run(void *opaque)
{
	struct pack_writer *w = opaque;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct pack_upload u;
		char key[80];
		int e;

		while (!w->q_len && !w->stopping)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!w->q_len)
			break;
		u = w->queue[w->q_head];
		w->q_head = (w->q_head + 1) % PACK_QUEUE;
		w->q_len--;
		w->busy++;
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->lock);

		e = 0;
		if (!w->err) {
			repo2_pack_key(w->r, u.pack, key);
			e = store_put_nosync(w->r->st, key, u.buf, u.len);
			if (e == 0)
				repo2_crash_point("pack");
		}
		pthread_mutex_lock(&w->lock);
		if (e < 0 && !w->err)
			w->err = e;
		put_free_buf(w, u.buf);
		w->busy--;
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int pack_writer_init(struct pack_writer *w, struct repo2 *r)
{
	/* Room for a last chunk past the target, and for the padding. */
	*w = (struct pack_writer){ .r = r, .cap = REPO2_PACK_TARGET + r->block_size + SEAL_OVERHEAD + IO_DIRECT_ALIGN };
	if (!(w->buf = io_alloc_aligned(w->cap)))
		return -ENOMEM;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->started = true;
	for (; w->n_up < PACK_UPLOADERS; w->n_up++)
		if (pthread_create(&w->up[w->n_up], NULL, uploader_run, w) != 0)
			break;
	if (!w->n_up) {
		bk_error("cannot start a thread");
		return -EAGAIN;
	}
	return 0;
}

/* Wait until every queued pack is stored; the first error. */
static int wait_uploads(struct pack_writer *w)
{
	int e;

	pthread_mutex_lock(&w->lock);
	while (w->q_len || w->busy)
		pthread_cond_wait(&w->cond, &w->lock);
	e = w->err;
	pthread_mutex_unlock(&w->lock);
	return e;
}

void pack_writer_free(struct pack_writer *w)
{
	if (w->started) {
		pthread_mutex_lock(&w->lock);
		w->stopping = true;
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->lock);
		for (unsigned i = 0; i < w->n_up; i++)
			pthread_join(w->up[i], NULL);
		for (size_t i = 0; i < w->q_len; i++)
			free(w->queue[(w->q_head + i) % PACK_QUEUE].buf);
		for (unsigned i = 0; i < w->n_free; i++)
			free(w->free_bufs[i]);
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->lock);
		w->started = false;
	}
	free(w->buf);
	free(w->added);
	w->buf = NULL;
	w->added = NULL;
}

/* The pack in BUF is complete: name it, give its chunks their places, and
 * queue it for an uploader; BUF is a fresh buffer after. */
static int flush_pack(struct pack_writer *w)
{
	uint8_t id[32];
	uint32_t n;
	char *next = NULL;
	int e;

	if (w->len == 0)
		return 0;
	/* A random name: hashing the pack would cost the writer, alone, as
	 * much as hashing every chunk, and its chunks are checked one by one
	 * anyway. Nor can two packs (a crashed gc's and the next one's) share
	 * a name. */
	if (gnutls_rnd(GNUTLS_RND_NONCE, id, sizeof(id)) < 0)
		return -EIO;
	if ((n = pack_number(w->r, id)) == UINT32_MAX)
		return -ENOMEM;
	for (size_t i = w->first_in_buf; i < w->n_added; i++) {
		w->added[i].loc.pack = n;
		if (chunk_table_put(w->r->chunks, w->added[i].id, &w->added[i].loc) < 0)
			return -ENOMEM;
	}
	w->first_in_buf = w->n_added;
	/* Zeros to a whole number of 4 KiB: a directory store writes the pack
	 * with O_DIRECT then. No chunk's range covers them. */
	if (w->len % IO_DIRECT_ALIGN) {
		size_t pad = IO_DIRECT_ALIGN - w->len % IO_DIRECT_ALIGN;

		memset(w->buf + w->len, 0, pad);
		w->len += pad;
	}
	pthread_mutex_lock(&w->lock);
	while (w->q_len == PACK_QUEUE && !w->err)
		pthread_cond_wait(&w->cond, &w->lock);
	if ((e = w->err) == 0) {
		w->queue[(w->q_head + w->q_len) % PACK_QUEUE] = (struct pack_upload){ w->buf, w->len, n };
		w->q_len++;
		pthread_cond_broadcast(&w->cond);
		next = w->n_free ? w->free_bufs[--w->n_free] : NULL;
	}
	pthread_mutex_unlock(&w->lock);
	if (e < 0)
		return e;
	w->buf = next ? next : io_alloc_aligned(w->cap);
	w->len = 0;
	return w->buf ? 0 : -ENOMEM;
}

int pack_writer_add(struct pack_writer *w, const uint8_t id[CHUNK_ID_LEN], const void *sealed, size_t len,
		    uint32_t raw_len)
{
	int e;

	if (w->len + len > w->cap - IO_DIRECT_ALIGN) {
		bk_error("a sealed chunk of %zu bytes does not fit a pack", len);
		return -EINVAL;
	}
	if (w->n_added == w->cap_added) {
		size_t cap = w->cap_added ? w->cap_added * 2 : 1024;
		void *v = realloc(w->added, cap * sizeof(*w->added));

		if (!v)
			return -ENOMEM;
		w->added = v;
		w->cap_added = cap;
	}
	memcpy(w->added[w->n_added].id, id, CHUNK_ID_LEN);
	w->added[w->n_added].loc = (struct chunk_loc){ .pack = CHUNK_PENDING, .stored_len = (uint32_t)len,
						       .raw_len = raw_len, .offset = w->len };
	seal_check(sealed, len, w->added[w->n_added].loc.check);
	w->n_added++;
	memcpy(w->buf + w->len, sealed, len);
	w->len += len;
	w->stored_bytes += len;
	w->raw_bytes += raw_len;
	if (w->len >= REPO2_PACK_TARGET && (e = flush_pack(w)) < 0)
		return e;
	return 0;
}

int pack_writer_finish(struct pack_writer *w, struct seal_ctx *sc, char **index)
{
	int e;

	*index = NULL;
	/* The packs are on stable storage before an index names them. */
	if ((e = flush_pack(w)) < 0 || (e = wait_uploads(w)) < 0 || (e = store_sync(w->r->st)) < 0)
		return e;
	if (w->n_added == 0)
		return 0;
	e = repo2_write_index(w->r, sc, w->added, w->n_added, index);
	if (e == 0)
		repo2_crash_point("index");
	return e;
}

int repo2_write_index(struct repo2 *r, struct seal_ctx *sc, const struct new_chunk *v, size_t n, char **index)
{
	size_t len = INDEX_HEADER + n * (size_t)INDEX_ENTRY;
	uint8_t *buf;
	int e;

	if (!(buf = malloc(len)))
		return -ENOMEM;
	memcpy(buf, INDEX_MAGIC, 8);
	put_le64(buf + 8, n);
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = buf + INDEX_HEADER + i * INDEX_ENTRY;
		const struct new_chunk *c = &v[i];

		memcpy(p, c->id, CHUNK_ID_LEN);
		pthread_mutex_lock(&r->packs_lock);
		memcpy(p + 32, r->packs[c->loc.pack], 32);
		pthread_mutex_unlock(&r->packs_lock);
		put_le64(p + 64, c->loc.offset);
		put_le32(p + 72, c->loc.stored_len);
		put_le32(p + 76, c->loc.raw_len);
		memcpy(p + 80, c->loc.check, SEAL_CHECK_LEN);
	}
	e = put_addressed(r, sc, "index/", buf, len, index);
	free(buf);
	return e;
}

int repo2_commit(struct repo2 *r, struct seal_ctx *sc, struct repo2_backup *b, const uint8_t (*map)[CHUNK_ID_LEN])
{
	size_t len = MAP_HEADER + b->blocks * CHUNK_ID_LEN;
	uint8_t *buf = malloc(len);
	struct repo2_backup *nb;
	char tbuf[32];
	time_t now = time(NULL);
	struct tm tm;
	int e;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, MAP_MAGIC, 8);
	put_le64(buf + 8, b->size);
	put_le32(buf + 16, b->block_size);
	put_le32(buf + 20, 0);
	put_le64(buf + 24, b->blocks);
	memcpy(buf + MAP_HEADER, map, b->blocks * CHUNK_ID_LEN);
	e = put_addressed(r, sc, "maps/", buf, len, &b->map);
	free(buf);
	if (e < 0)
		return e;
	repo2_crash_point("map");
	gmtime_r(&now, &tm);
	strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!(b->time = strdup(tbuf)))
		return -ENOMEM;
	b->unix_time = now;
	/* The next number: one past the highest ever seen, usable or not. */
	b->num = r->n ? r->b[r->n - 1].num + 1 : 0;
	if ((e = write_manifest(r, sc, b)) < 0)
		return e;
	repo2_crash_point("manifest");
	if (!(nb = realloc(r->b, (r->n + 1) * sizeof(*nb))))
		return 0; /* stored; only this process's view is short of it */
	r->b = nb;
	r->b[r->n] = *b;
	r->n++;
	*b = (struct repo2_backup){ .num = b->num, .parent = -1, .changes_number = -1 };
	return 0;
}

int repo2_reload(struct repo2 *r)
{
	return read_manifests(r);
}

int repo2_forget(struct repo2 *r, unsigned num)
{
	char key[40];

	repo2_manifest_key(num, key);
	return store_del(r->st, key);
}
