/* verify, list and info of a version 2 repository. verify reads every
 * manifest and block map and checks that each chunk a map names is in an
 * index and inside a pack that exists; with --deep it also fetches every
 * chunk once, decrypts, decompresses and hashes it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/backup.h"
#include "backup/block_list.h"
#include "backup/chunk_table.h"
#include "backup/repo2.h"
#include "backup/util.h"

#define ERRORS_PER_BACKUP 10

static void add_error(struct json_object *errors, char *msg)
{
	json_object_array_add(errors, json_object_new_string(msg ? msg : "out of memory"));
	free(msg);
}

/* The packs the store holds, and their sizes: by the pack numbers of
 * r->packs (0 for a pack that is not there). */
struct pack_sizes {
	struct repo2 *r;
	uint64_t *size;
	uint64_t total;
	size_t count;
};

static int note_pack(void *opaque, const char *key, uint64_t size)
{
	struct pack_sizes *ps = opaque;
	uint8_t id[32];
	const char *hex = strrchr(key, '/');

	ps->total += size;
	ps->count++;
	if (!hex || seal_unhex(hex + 1, id, 32) < 0)
		return 0;
	for (uint32_t i = 0; i < ps->r->n_packs; i++)
		if (!memcmp(ps->r->packs[i], id, 32)) {
			ps->size[i] = size + 1; /* 0 stays "absent" */
			break;
		}
	return 0;
}

/* Every chunk used, once, for --deep: a second table of what was checked. */
struct deep {
	struct repo2 *r;
	struct seal_ctx *sc;
	struct chunk_table *seen;
	char *buf;
	uint64_t chunks, bad;
};

static int check_chunk(struct repo2 *r, const struct pack_sizes *ps, struct deep *d, const uint8_t id[CHUNK_ID_LEN],
		       uint32_t raw_len, char **why)
{
	struct chunk_loc loc;
	char key[80], hex[2 * CHUNK_ID_LEN + 1];

	if (repo2_find_chunk(r, id, &loc) < 0) {
		seal_hex(id, CHUNK_ID_LEN, hex);
		*why = bk_format("chunk %.16s is in no index (missing)", hex);
		return -ENOENT;
	}
	repo2_pack_key(r, loc.pack, key);
	if (ps->size[loc.pack] == 0) {
		seal_hex(id, CHUNK_ID_LEN, hex);
		*why = bk_format("chunk %.16s: %s is missing", hex, key);
		return -ENOENT;
	}
	if (loc.offset + loc.stored_len > ps->size[loc.pack] - 1) {
		seal_hex(id, CHUNK_ID_LEN, hex);
		*why = bk_format("chunk %.16s: %s is too short (truncated)", hex, key);
		return -EBADMSG;
	}
	if (loc.raw_len != raw_len) {
		seal_hex(id, CHUNK_ID_LEN, hex);
		*why = bk_format("chunk %.16s holds %u bytes, the block %u", hex, loc.raw_len, raw_len);
		return -EBADMSG;
	}
	if (d) {
		struct chunk_loc seen;

		if (chunk_table_get(d->seen, id, &seen) == 0)
			return seen.pack ? -EBADMSG : 0; /* checked already: bad or good */
		d->chunks++;
		if (repo2_read_chunk(r, d->sc, id, d->buf, raw_len, true, why) < 0) {
			chunk_table_put(d->seen, id, &(struct chunk_loc){ .pack = 1 });
			return -EBADMSG;
		}
		chunk_table_put(d->seen, id, &(struct chunk_loc){ .pack = 0 });
	}
	return 0;
}

int verify2_run(const char *repo, const char *key_file, bool deep, struct json_object **result)
{
	struct repo2 *r;
	struct seal_ctx *sc = NULL;
	struct json_object *errors = json_object_new_array();
	struct pack_sizes ps = { 0 };
	struct deep d = { 0 };
	uint64_t blocks = 0;
	unsigned usable = 0;
	int err;

	if ((err = repo2_open(repo, STORE_LOCK_READ, NULL, key_file, &r)) < 0) {
		json_object_put(errors);
		return err;
	}
	if ((err = seal_ctx_new(r->seal, &sc)) < 0)
		goto out;
	/* A damaged index is reported and its chunks counted missing. */
	if ((err = repo2_load_chunks(r, sc, false)) < 0)
		goto out;
	ps.r = r;
	if (!(ps.size = calloc(r->n_packs ? r->n_packs : 1, sizeof(*ps.size)))) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = store_list(r->st, "packs/", note_pack, &ps)) < 0)
		goto out;
	if (deep) {
		d = (struct deep){ .r = r, .sc = sc, .seen = chunk_table_new(), .buf = malloc(r->block_size) };
		if (!d.seen || !d.buf) {
			err = -ENOMEM;
			goto out;
		}
	}
	for (unsigned k = 0; k < r->n; k++) {
		const struct repo2_backup *b = &r->b[k];
		uint8_t(*map)[CHUNK_ID_LEN];
		uint64_t bad = 0;
		char *why = NULL;

		if (b->error) {
			add_error(errors, strdup(b->error));
			continue;
		}
		if (repo2_read_map(r, b, sc, &why, &map) < 0) {
			add_error(errors, bk_format("backup %u: %s", b->num, why ? why : "its map cannot be read"));
			free(why);
			continue;
		}
		for (uint64_t i = 0; i < b->blocks; i++) {
			if (repo2_zero_id(map[i]))
				continue;
			blocks++;
			if (check_chunk(r, &ps, deep ? &d : NULL, map[i], block_length(i, b->size, b->block_size),
					&why) == 0)
				continue;
			if (++bad <= ERRORS_PER_BACKUP)
				add_error(errors, bk_format("backup %u: block %" PRIu64 ": %s", b->num, i,
						      why ? why : "damaged"));
			free(why);
			why = NULL;
		}
		if (bad > ERRORS_PER_BACKUP)
			add_error(errors, bk_format("backup %u: and %" PRIu64 " more blocks that cannot be restored",
					      b->num, bad - ERRORS_PER_BACKUP));
		usable += bad == 0;
		free(map);
	}
	*result = json_object_new_object();
	json_object_object_add(*result, "repo", json_object_new_string(repo));
	json_object_object_add(*result, "deep", json_object_new_boolean(deep));
	json_object_object_add(*result, "backups", json_object_new_int64(r->n));
	json_object_object_add(*result, "restorable", json_object_new_int64(usable));
	json_object_object_add(*result, "blocks", json_object_new_int64((int64_t)blocks));
	if (deep)
		json_object_object_add(*result, "chunks_checked", json_object_new_int64((int64_t)d.chunks));
	json_object_object_add(*result, "ok", json_object_new_boolean(json_object_array_length(errors) == 0));
	json_object_object_add(*result, "errors", errors);
	errors = NULL;
	err = usable == r->n && json_object_array_length(json_object_object_get(*result, "errors")) == 0 ? 0 : 1;
out:
	if (err < 0)
		bk_error("verify: %s", strerror(-err));
	json_object_put(errors);
	chunk_table_free(d.seen);
	free(d.buf);
	free(ps.size);
	seal_ctx_free(sc);
	repo2_close(r);
	return err;
}

static struct json_object *backup_json(const struct repo2_backup *b)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "backup", json_object_new_int64(b->num));
	if (b->error) {
		json_object_object_add(o, "error", json_object_new_string(b->error));
		return o;
	}
	json_object_object_add(o, "device", json_object_new_string(b->device));
	json_object_object_add(o, "kind", json_object_new_string(b->full ? "full" : "incremental"));
	json_object_object_add(o, "parent", b->full ? NULL : json_object_new_int64(b->parent));
	json_object_object_add(o, "time", json_object_new_string(b->time));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)b->size));
	json_object_object_add(o, "generation", b->generation ? json_object_new_string(b->generation) : NULL);
	json_object_object_add(o, "changes_number",
			       b->changes_number >= 0 ? json_object_new_int64(b->changes_number) : NULL);
	json_object_object_add(o, "data_bytes",
			       json_object_new_int64((int64_t)(b->data_blocks * (uint64_t)b->block_size)));
	json_object_object_add(o, "read_bytes",
			       json_object_new_int64((int64_t)(b->read_blocks * (uint64_t)b->block_size)));
	json_object_object_add(o, "new_bytes", json_object_new_int64((int64_t)b->new_bytes));
	json_object_object_add(o, "stored_bytes", json_object_new_int64((int64_t)b->stored_bytes));
	json_object_object_add(o, "from", json_object_new_string(b->from));
	return o;
}

int list2_run(const char *repo, const char *key_file, struct json_object **result)
{
	struct repo2 *r;
	struct json_object *list;
	int err = 0;

	if ((err = repo2_open(repo, STORE_LOCK_READ, NULL, key_file, &r)) < 0)
		return err;
	list = json_object_new_array();
	for (unsigned k = 0; k < r->n; k++) {
		if (r->b[k].error) {
			bk_error("%s", r->b[k].error);
			err = 1;
		}
		json_object_array_add(list, backup_json(&r->b[k]));
	}
	*result = json_object_new_object();
	json_object_object_add(*result, "repo", json_object_new_string(repo));
	json_object_object_add(*result, "version", json_object_new_int(REPO2_VERSION));
	json_object_object_add(*result, "block_size", json_object_new_int64(r->block_size));
	json_object_object_add(*result, "backups", list);
	repo2_close(r);
	return err;
}

struct tally {
	uint64_t chunks, raw, stored;
};

static void tally_chunk(void *opaque, const uint8_t id[CHUNK_ID_LEN], const struct chunk_loc *loc)
{
	struct tally *t = opaque;

	(void)id;
	t->chunks++;
	t->raw += loc->raw_len;
	t->stored += loc->stored_len;
}

int info2_run(const char *repo, const char *key_file, struct json_object **result)
{
	struct repo2 *r;
	struct seal_ctx *sc = NULL;
	struct pack_sizes ps = { 0 };
	struct tally t = { 0 };
	uint64_t logical = 0;
	unsigned usable = 0;
	int err;

	if ((err = repo2_open(repo, STORE_LOCK_READ, NULL, key_file, &r)) < 0)
		return err;
	if ((err = seal_ctx_new(r->seal, &sc)) < 0 || (err = repo2_load_chunks(r, sc, false)) < 0)
		goto out;
	ps.r = r;
	if (!(ps.size = calloc(r->n_packs ? r->n_packs : 1, sizeof(*ps.size)))) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = store_list(r->st, "packs/", note_pack, &ps)) < 0)
		goto out;
	chunk_table_each(r->chunks, tally_chunk, &t);
	for (unsigned k = 0; k < r->n; k++)
		if (!r->b[k].error) {
			logical += r->b[k].data_blocks * (uint64_t)r->b[k].block_size;
			usable++;
		}
	*result = json_object_new_object();
	json_object_object_add(*result, "repo", json_object_new_string(repo));
	json_object_object_add(*result, "version", json_object_new_int(REPO2_VERSION));
	json_object_object_add(*result, "block_size", json_object_new_int64(r->block_size));
	json_object_object_add(*result, "compression",
			       seal_level(r->seal) ? json_object_new_string("zstd") : json_object_new_string("none"));
	json_object_object_add(*result, "encrypted", json_object_new_boolean(seal_encrypted(r->seal)));
	json_object_object_add(*result, "backups", json_object_new_int64(usable));
	/* The bytes of every backup's data as the device held them; the same
	 * once each (dedup); as stored (compressed and sealed); and the packs. */
	json_object_object_add(*result, "logical_bytes", json_object_new_int64((int64_t)logical));
	json_object_object_add(*result, "chunks", json_object_new_int64((int64_t)t.chunks));
	json_object_object_add(*result, "unique_bytes", json_object_new_int64((int64_t)t.raw));
	json_object_object_add(*result, "stored_bytes", json_object_new_int64((int64_t)t.stored));
	json_object_object_add(*result, "packs", json_object_new_int64((int64_t)ps.count));
	json_object_object_add(*result, "pack_bytes", json_object_new_int64((int64_t)ps.total));
	json_object_object_add(*result, "dedup_ratio",
			       json_object_new_double(t.raw ? (double)logical / (double)t.raw : 0));
	json_object_object_add(*result, "compression_ratio",
			       json_object_new_double(t.stored ? (double)t.raw / (double)t.stored : 0));
out:
	free(ps.size);
	seal_ctx_free(sc);
	repo2_close(r);
	return err;
}
