/* prune and gc (prune.h). Under the repository's PRUNE lock (no backup,
 * restore or serve meanwhile):
 *
 *   forget   remove the manifests of the backups the policy drops: each is
 *            gone at once, and nothing else changes;
 *   mark     read every remaining backup's map: the chunks they use are
 *            live; read every index entry; choose for each live chunk one
 *            copy in a pack that exists;
 *   write    copy the live chunks of packs that are mostly dead into new
 *            packs (the sealed bytes as they are: nothing is decrypted but
 *            to check them), then store one new index of every live chunk;
 *   sweep    remove every other index, then the packs no index names, then
 *            the maps no manifest names.
 *
 * A crash before the new index leaves only unreferenced new packs; after
 * it, the old indexes name packs that are still there until the last old
 * index is gone; packs go only after that. So at every step each remaining
 * backup restores, and the next prune finishes the job (tests/functional/
 * backup-prune.sh kills it at each step). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "backup/block_list.h"
#include "backup/chunk_table.h"
#include "backup/prune.h"
#include "backup/repo2.h"
#include "backup/util.h"

/* A pack whose dead bytes pass this share of it is rewritten. */
#define REPACK_DEAD_PERCENT 20

/* ---- retention ---- */

static int cmp_newest(const void *a, const void *b)
{
	const struct prune_item *x = *(struct prune_item *const *)a, *y = *(struct prune_item *const *)b;
	int d = strcmp(x->device, y->device);

	if (d)
		return d;
	if (x->time != y->time)
		return x->time > y->time ? -1 : 1;
	return x->num > y->num ? -1 : x->num < y->num;
}

enum period { DAY, WEEK, MONTH };

/* The period T falls in (UTC), as a string: 2026-11-30, 2026-W49, 2026-11. */
static void bucket(int64_t t, enum period pd, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	if (pd == DAY)
		strftime(out, len, "%Y-%m-%d", &tm);
	else if (pd == WEEK)
		strftime(out, len, "%G-W%V", &tm);
	else
		strftime(out, len, "%Y-%m", &tm);
}

/* Keep the newest of each of the first COUNT periods of the device's items
 * P[0..n), newest first. */
static void keep_buckets(struct prune_item **p, size_t n, unsigned count, enum period pd, const char *why)
{
	char last[32] = "", cur[32];
	unsigned seen = 0;

	for (size_t i = 0; i < n && seen < count; i++) {
		bucket(p[i]->time, pd, cur, sizeof(cur));
		if (!strcmp(cur, last))
			continue;
		strcpy(last, cur);
		seen++;
		if (!p[i]->keep) {
			p[i]->keep = true;
			p[i]->why = why;
		}
	}
}

void prune_select(struct prune_item *v, size_t n, const struct prune_rules *k)
{
	struct prune_item **p = malloc((n ? n : 1) * sizeof(*p));
	bool none = !k->last && !k->daily && !k->weekly && !k->monthly;

	for (size_t i = 0; i < n; i++) {
		v[i].keep = none;
		v[i].why = none ? "no policy" : NULL;
	}
	if (none || !p) {
		/* Out of memory: keep everything rather than guess. */
		for (size_t i = 0; i < n; i++)
			v[i].keep = true;
		free(p);
		return;
	}
	for (size_t i = 0; i < n; i++)
		p[i] = &v[i];
	qsort(p, n, sizeof(*p), cmp_newest);
	for (size_t start = 0; start < n;) {
		size_t end = start + 1;

		while (end < n && !strcmp(p[end]->device, p[start]->device))
			end++;
		for (size_t i = start; i < end && i - start < k->last; i++) {
			p[i]->keep = true;
			p[i]->why = "last";
		}
		keep_buckets(p + start, end - start, k->daily, DAY, "daily");
		keep_buckets(p + start, end - start, k->weekly, WEEK, "weekly");
		keep_buckets(p + start, end - start, k->monthly, MONTH, "monthly");
		start = end;
	}
	free(p);
}

/* ---- gc ---- */

struct entry {
	uint8_t id[CHUNK_ID_LEN];
	struct chunk_loc loc;
};

struct gc {
	struct repo2 *r;
	struct seal_ctx *sc;
	struct chunk_table *live;   /* id -> (pack = 1 once a copy is chosen) */
	struct entry *e;            /* every index entry */
	size_t n_e, cap_e;
	uint64_t *pack_size;        /* by pack number: stored size + 1, 0 if absent */
	uint64_t *pack_live;        /* live bytes chosen in it */
	struct listed {             /* every pack in the store, as listed */
		char *key;
		uint64_t size;
		uint32_t num;       /* in r->packs; UINT32_MAX if no index names it */
	} *listed;
	size_t n_listed;
	uint64_t pack_bytes;
	int err;
};

static void note_entry(void *opaque, const uint8_t id[CHUNK_ID_LEN], const struct chunk_loc *loc)
{
	struct gc *g = opaque;

	if (g->n_e == g->cap_e) {
		size_t cap = g->cap_e ? g->cap_e * 2 : 4096;
		struct entry *v = realloc(g->e, cap * sizeof(*v));

		if (!v) {
			g->err = -ENOMEM;
			return;
		}
		g->e = v;
		g->cap_e = cap;
	}
	memcpy(g->e[g->n_e].id, id, CHUNK_ID_LEN);
	g->e[g->n_e].loc = *loc;
	g->n_e++;
}

/* The pack number of a listed key, or UINT32_MAX if no index names it. */
static uint32_t listed_pack(struct repo2 *r, const char *key)
{
	const char *slash = strrchr(key, '/');
	uint8_t id[32];

	if (!slash || seal_unhex(slash + 1, id, 32) < 0)
		return UINT32_MAX;
	for (uint32_t i = 0; i < r->n_packs; i++)
		if (!memcmp(r->packs[i], id, 32))
			return i;
	return UINT32_MAX;
}

static int note_pack_key(void *opaque, const char *key, uint64_t size)
{
	struct gc *g = opaque;
	struct listed *v = realloc(g->listed, (g->n_listed + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	g->listed = v;
	if (!(v[g->n_listed].key = strdup(key)))
		return -ENOMEM;
	v[g->n_listed].size = size;
	v[g->n_listed].num = listed_pack(g->r, key);
	g->n_listed++;
	g->pack_bytes += size;
	return 0;
}

struct maps_seen {
	char **keys;
	size_t n;
	struct repo2 *r;
	const bool *gone;
	bool dry_run;
	uint64_t removed;
	int err;
};

static int sweep_map(void *opaque, const char *key, uint64_t size)
{
	struct maps_seen *m = opaque;

	(void)size;
	for (unsigned i = 0; i < m->r->n; i++)
		if (!m->r->b[i].error && !(m->gone && m->gone[i]) && !strcmp(m->r->b[i].map, key))
			return 0;
	if (m->dry_run) {
		m->removed++;
		return 0;
	}
	if (store_del(m->r->st, key) < 0) {
		m->err = -EIO;
		return 0;
	}
	m->removed++;
	return 0;
}

static int collect_key(void *opaque, const char *key, uint64_t size)
{
	struct maps_seen *m = opaque;
	char **v = realloc(m->keys, (m->n + 1) * sizeof(*v));

	(void)size;
	if (!v || !(v[m->n] = strdup(key)))
		return -ENOMEM;
	m->keys = v;
	m->n++;
	return 0;
}

/* GONE (for a dry run, else NULL): backups of r->b counted as removed. */
static int gc_run(struct repo2 *r, struct seal_ctx *sc, bool dry_run, const bool *gone, struct json_object *out)
{
	struct gc g = { .r = r, .sc = sc };
	struct pack_writer pw = { 0 };
	struct new_chunk *keep = NULL;
	size_t n_keep = 0;
	uint64_t live_chunks = 0, repacked = 0, packs_removed = 0, bytes_removed = 0, lost = 0;
	bool *repack = NULL, *needed = NULL;
	char *new_index = NULL, *buf = NULL;
	struct maps_seen ms = { .r = r, .gone = gone, .dry_run = dry_run };
	int e;

	if (!(g.live = chunk_table_new()))
		return -ENOMEM;
	/* mark: what the remaining backups use. A backup whose map cannot be
	 * read makes gc stop: it cannot know what that backup needs. */
	for (unsigned i = 0; i < r->n; i++) {
		const struct repo2_backup *b = &r->b[i];
		uint8_t(*map)[CHUNK_ID_LEN];
		char *why = NULL;

		if (gone && gone[i])
			continue;
		if (b->error) {
			bk_error("gc: %s: the chunks it uses are unknown; remove or repair it first", b->error);
			e = -EINVAL;
			goto out;
		}
		if ((e = repo2_read_map(r, b, sc, &why, &map)) < 0) {
			bk_error("gc: backup %u: %s; nothing is removed", b->num, why ? why : strerror(-e));
			free(why);
			goto out;
		}
		for (uint64_t k = 0; k < b->blocks; k++)
			if (!repo2_zero_id(map[k]) && (e = chunk_table_put(g.live, map[k], &(struct chunk_loc){ 0 })) < 0) {
				free(map);
				goto out;
			}
		free(map);
	}
	live_chunks = chunk_table_count(g.live);
	if ((e = repo2_load_chunks(r, sc, true)) < 0 || (e = repo2_each_index_entry(r, sc, note_entry, &g)) < 0 ||
	    (e = g.err) < 0)
		goto out;
	if ((e = store_list(r->st, "packs/", note_pack_key, &g)) < 0)
		goto out;
	g.pack_size = calloc(r->n_packs + 1, sizeof(*g.pack_size));
	g.pack_live = calloc(r->n_packs + 1, sizeof(*g.pack_live));
	repack = calloc(r->n_packs + 1, sizeof(*repack));
	if (!g.pack_size || !g.pack_live || !repack) {
		e = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < g.n_listed; i++)
		if (g.listed[i].num != UINT32_MAX)
			g.pack_size[g.listed[i].num] = g.listed[i].size + 1;
	/* choose: one copy of each live chunk, in a pack that is there and
	 * holds it whole. */
	if (!(keep = calloc(live_chunks ? live_chunks : 1, sizeof(*keep)))) {
		e = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < g.n_e; i++) {
		struct entry *en = &g.e[i];
		struct chunk_loc chosen;

		if (chunk_table_get(g.live, en->id, &chosen) < 0 || chosen.pack)
			continue; /* dead, or a copy is chosen already */
		if (!g.pack_size[en->loc.pack] || en->loc.offset + en->loc.stored_len > g.pack_size[en->loc.pack] - 1)
			continue;
		chunk_table_put(g.live, en->id, &(struct chunk_loc){ .pack = 1 });
		memcpy(keep[n_keep].id, en->id, CHUNK_ID_LEN);
		keep[n_keep].loc = en->loc;
		g.pack_live[en->loc.pack] += en->loc.stored_len;
		n_keep++;
	}
	lost = live_chunks - n_keep;
	if (lost) {
		bk_error("gc: %" PRIu64 " chunks that backups use are in no pack (see verify); nothing is removed", lost);
		e = -EIO;
		goto out;
	}
	for (uint32_t p = 0; p < r->n_packs; p++) {
		uint64_t size = g.pack_size[p] ? g.pack_size[p] - 1 : 0;

		if (size && g.pack_live[p] && (size - g.pack_live[p]) * 100 > size * REPACK_DEAD_PERCENT)
			repack[p] = true;
	}
	for (size_t i = 0; i < g.n_listed; i++) {
		uint32_t p = g.listed[i].num;

		if (p == UINT32_MAX || !g.pack_live[p] || repack[p]) {
			packs_removed++;
			bytes_removed += g.listed[i].size;
		}
	}
	for (size_t i = 0; i < n_keep; i++)
		repacked += repack[keep[i].loc.pack];
	if (dry_run) {
		if ((e = store_list(r->st, "maps/", sweep_map, &ms)) < 0)
			goto out;
		goto report;
	}

	/* write: the live chunks of mostly dead packs into new ones, each
	 * checked on the way. */
	if (repacked) {
		if ((e = pack_writer_init(&pw, r)) < 0 || !(buf = malloc(r->block_size))) {
			e = e < 0 ? e : -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < n_keep; i++) {
			struct new_chunk *k = &keep[i];
			char key[80], hex[2 * CHUNK_ID_LEN + 1];
			const char *why = NULL;
			char *sealed;

			if (!repack[k->loc.pack])
				continue;
			repo2_pack_key(r, k->loc.pack, key);
			if (!(sealed = malloc(k->loc.stored_len))) {
				e = -ENOMEM;
				goto out;
			}
			e = store_get_range(r->st, key, k->loc.offset, k->loc.stored_len, sealed);
			if (e == 0 && (e = seal_open_chunk(sc, k->id, sealed, k->loc.stored_len, buf, k->loc.raw_len, NULL,
							   &why)) < 0) {
				seal_hex(k->id, CHUNK_ID_LEN, hex);
				bk_error("gc: chunk %.16s in %s %s: nothing is removed", hex, key, why);
			}
			if (e == 0)
				e = pack_writer_add(&pw, k->id, sealed, k->loc.stored_len, k->loc.raw_len);
			free(sealed);
			if (e < 0)
				goto out;
		}
		if ((e = pack_writer_finish(&pw, sc, &new_index)) < 0)
			goto out;
		free(new_index);
		new_index = NULL;
		/* The copies' new places, for the index below. */
		for (size_t i = 0, j = 0; i < n_keep; i++)
			if (repack[keep[i].loc.pack])
				keep[i].loc = pw.added[j++].loc;
		repo2_crash_point("gc-repack");
	}
	if (n_keep && (e = repo2_write_index(r, sc, keep, n_keep, &new_index)) < 0)
		goto out;
	repo2_crash_point("gc-index");

	/* sweep: old indexes, then packs no index names, then maps. */
	for (size_t i = 0; i < r->n_index; i++) {
		if (new_index && !strcmp(r->index_keys[i], new_index))
			continue;
		/* pack_writer_finish's own index (of the repacked chunks) is not
		 * in r->index_keys: it is found by the listing below. */
		if ((e = store_del(r->st, r->index_keys[i])) < 0)
			goto out;
		if (i == 0)
			repo2_crash_point("gc-sweep-index");
	}
	{
		struct maps_seen idx = { .r = r };

		if ((e = store_list(r->st, "index/", collect_key, &idx)) < 0)
			goto out;
		for (size_t i = 0; i < idx.n; i++) {
			if ((!new_index || strcmp(idx.keys[i], new_index)) && (e = store_del(r->st, idx.keys[i])) < 0)
				break;
		}
		for (size_t i = 0; i < idx.n; i++)
			free(idx.keys[i]);
		free(idx.keys);
		if (e < 0)
			goto out;
	}
	repo2_crash_point("gc-sweep-indexes-done");
	/* A pack the new index names stays, whatever was decided before: a
	 * repacked pack can come out byte for byte (and so by name) the one a
	 * crashed run stored, which the listing holds and counts as dead. */
	if (!(needed = calloc(r->n_packs + 1, sizeof(*needed)))) {
		e = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_keep; i++)
		needed[keep[i].loc.pack] = true;
	for (size_t i = 0; i < g.n_listed; i++) {
		uint32_t p = g.listed[i].num;

		if (p == UINT32_MAX || ((!g.pack_live[p] || repack[p]) && !needed[p])) {
			if ((e = store_del(r->st, g.listed[i].key)) < 0)
				goto out;
			repo2_crash_point("gc-sweep-pack");
		}
	}
	if ((e = store_list(r->st, "maps/", sweep_map, &ms)) < 0 || (e = ms.err) < 0)
		goto out;
report:
	json_object_object_add(out, "live_chunks", json_object_new_int64((int64_t)live_chunks));
	json_object_object_add(out, "repacked_chunks", json_object_new_int64((int64_t)repacked));
	json_object_object_add(out, "packs_removed", json_object_new_int64((int64_t)packs_removed));
	json_object_object_add(out, "bytes_removed", json_object_new_int64((int64_t)bytes_removed));
	json_object_object_add(out, "maps_removed", json_object_new_int64((int64_t)ms.removed));
	e = 0;
out:
	pack_writer_free(&pw);
	for (size_t i = 0; i < g.n_listed; i++)
		free(g.listed[i].key);
	free(g.listed);
	free(g.pack_size);
	free(g.pack_live);
	free(g.e);
	free(repack);
	free(needed);
	free(keep);
	free(buf);
	free(new_index);
	chunk_table_free(g.live);
	return e;
}

int prune_run(const struct prune_opts *o, struct json_object **result)
{
	struct repo2 *r = NULL;
	struct seal_ctx *sc = NULL;
	struct prune_item *v = NULL;
	bool *gone = NULL;
	struct json_object *kept, *removed, *res;
	size_t n = 0;
	double t0 = bk_seconds();
	int e;

	if ((e = repo2_open(o->repo, STORE_LOCK_PRUNE, NULL, o->key_file, &r)) < 0)
		return e;
	if ((e = seal_ctx_new(r->seal, &sc)) < 0)
		goto out;
	if (!(v = calloc(r->n ? r->n : 1, sizeof(*v)))) {
		e = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < r->n; i++)
		if (!r->b[i].error && (!o->device || !strcmp(o->device, r->b[i].device)))
			v[n++] = (struct prune_item){ .num = r->b[i].num, .device = r->b[i].device, .time = r->b[i].unix_time };
	prune_select(v, n, &o->keep);
	res = json_object_new_object();
	kept = json_object_new_array();
	removed = json_object_new_array();
	json_object_object_add(res, "repo", json_object_new_string(o->repo));
	json_object_object_add(res, "dry_run", json_object_new_boolean(o->dry_run));
	json_object_object_add(res, "kept", kept);
	json_object_object_add(res, "removed", removed);
	for (size_t i = 0; i < n; i++)
		json_object_array_add(v[i].keep ? kept : removed, json_object_new_int64(v[i].num));
	/* forget: newest first does not matter; each removal stands alone. */
	for (size_t i = 0; i < n && !o->dry_run; i++) {
		if (v[i].keep)
			continue;
		if ((e = repo2_forget(r, v[i].num)) < 0) {
			json_object_put(res);
			goto out;
		}
		repo2_crash_point("prune-forget");
	}
	if (!o->dry_run) {
		/* Read the manifests again: what gc keeps is what is there now. */
		for (unsigned i = 0; i < r->n; i++)
			repo2_backup_clear(&r->b[i]);
		free(r->b);
		r->b = NULL;
		r->n = 0;
		if ((e = repo2_reload(r)) < 0) {
			json_object_put(res);
			goto out;
		}
	}
	if (o->dry_run) {
		if (!(gone = calloc(r->n ? r->n : 1, sizeof(*gone)))) {
			json_object_put(res);
			e = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < n; i++)
			for (unsigned k = 0; k < r->n; k++)
				if (!v[i].keep && r->b[k].num == v[i].num)
					gone[k] = true;
	}
	if ((e = gc_run(r, sc, o->dry_run, gone, res)) < 0) {
		json_object_put(res);
		goto out;
	}
	json_object_object_add(res, "seconds", json_object_new_double(bk_seconds() - t0));
	*result = res;
out:
	free(v);
	free(gone);
	seal_ctx_free(sc);
	repo2_close(r);
	return e;
}
