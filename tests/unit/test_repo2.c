/* Unit tests: the pure logic of repository version 2. The retention policy
 * (backup/prune.c's prune_select: last, daily, weekly, monthly, per device),
 * the chunk table (backup/chunk_table.c: put, get, claim, growth), sealing
 * (backup/seal.c: a chunk and a metadata object round-trip, compression
 * where it pays, every flipped byte of an encrypted chunk refused and of a
 * plain one refused or harmless), and the manifest parser's refusals. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "backup/chunk_table.h"
#include "backup/prune.h"
#include "backup/repo2.h"
#include "backup/seal.h"

#define DAY 86400
/* 2026-11-30 00:00:00 UTC, a Monday */
#define T0 1795996800LL

static bool kept(const struct prune_item *v, size_t n, unsigned num)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].num == num)
			return v[i].keep;
	fail();
	return false;
}

static void keep_last_per_device(void **state)
{
	struct prune_item v[6] = {
		{ .num = 0, .device = "a", .time = T0 }, { .num = 1, .device = "b", .time = T0 + 1 },
		{ .num = 2, .device = "a", .time = T0 + 2 }, { .num = 3, .device = "a", .time = T0 + 3 },
		{ .num = 4, .device = "b", .time = T0 + 4 }, { .num = 5, .device = "b", .time = T0 + 5 },
	};
	struct prune_rules k = { .last = 2 };

	(void)state;
	prune_select(v, 6, &k);
	assert_false(kept(v, 6, 0));
	assert_false(kept(v, 6, 1));
	assert_true(kept(v, 6, 2) && kept(v, 6, 3) && kept(v, 6, 4) && kept(v, 6, 5));
	assert_string_equal(v[3].why, "last");
}

static void keep_daily_weekly_monthly(void **state)
{
	/* One backup at 01:00 and one at 13:00 of each of 70 days back from T0. */
	struct prune_item v[140];
	struct prune_rules daily = { .daily = 3 }, weekly = { .weekly = 2 }, monthly = { .monthly = 2 };
	size_t n = 0, count;

	(void)state;
	for (int d = 0; d < 70; d++) {
		v[n] = (struct prune_item){ .num = (unsigned)n, .device = "a", .time = T0 - d * DAY + 3600 };
		n++;
		v[n] = (struct prune_item){ .num = (unsigned)n, .device = "a", .time = T0 - d * DAY + 13 * 3600 };
		n++;
	}
	/* daily 3: the 13:00 backup of each of the last three days */
	prune_select(v, n, &daily);
	count = 0;
	for (size_t i = 0; i < n; i++)
		count += v[i].keep;
	assert_int_equal(count, 3);
	assert_true(kept(v, n, 1) && kept(v, n, 3) && kept(v, n, 5));
	assert_false(kept(v, n, 0));
	/* weekly 2: the newest of this ISO week (Monday T0) and of the last */
	prune_select(v, n, &weekly);
	count = 0;
	for (size_t i = 0; i < n; i++)
		count += v[i].keep;
	assert_int_equal(count, 2);
	assert_true(kept(v, n, 1));      /* Monday 30 Nov, 13:00 */
	assert_true(kept(v, n, 3));      /* Sunday 29 Nov, 13:00: the week before */
	/* monthly 2: the newest of November and of October */
	prune_select(v, n, &monthly);
	count = 0;
	for (size_t i = 0; i < n; i++)
		count += v[i].keep;
	assert_int_equal(count, 2);
	assert_true(kept(v, n, 1));
	assert_true(kept(v, n, 61));     /* 31 Oct is day 30 back: items 60, 61 */
	assert_string_equal(v[61].why, "monthly");
}

static void no_policy_keeps_all(void **state)
{
	struct prune_item v[2] = { { .num = 0, .device = "a", .time = T0 }, { .num = 1, .device = "a", .time = T0 } };
	struct prune_rules none = { 0 };

	(void)state;
	prune_select(v, 2, &none);
	assert_true(v[0].keep && v[1].keep);
}

static void chunk_table_grows_and_claims(void **state)
{
	struct chunk_table *t = chunk_table_new();
	uint8_t id[CHUNK_ID_LEN] = { 0 };
	struct chunk_loc loc;

	(void)state;
	assert_non_null(t);
	for (uint32_t i = 0; i < 5000; i++) {
		memcpy(id, &i, sizeof(i));
		id[31] = 7;
		assert_int_equal(chunk_table_put(t, id, &(struct chunk_loc){ .pack = i, .offset = i * 10ull }), 0);
	}
	assert_int_equal(chunk_table_count(t), 5000);
	for (uint32_t i = 0; i < 5000; i++) {
		memcpy(id, &i, sizeof(i));
		assert_int_equal(chunk_table_get(t, id, &loc), 0);
		assert_int_equal(loc.pack, i);
		assert_int_equal(loc.offset, i * 10ull);
		assert_false(chunk_table_claim(t, id));
	}
	id[0] = 0xff, id[1] = 0xff, id[2] = 0xff, id[3] = 0xff;
	assert_int_equal(chunk_table_get(t, id, &loc), -ENOENT);
	assert_true(chunk_table_claim(t, id));
	assert_false(chunk_table_claim(t, id));
	assert_int_equal(chunk_table_get(t, id, &loc), 0);
	assert_int_equal(loc.pack, CHUNK_PENDING);
	chunk_table_free(t);
}

/* Seal a chunk of text and of random bytes; flip each byte of the sealed
 * text chunk in turn: every one is refused. */
static void seal_round_trip(struct seal *s, bool keyed)
{
	struct seal_ctx *c;
	char text[65536], rnd[65536], out[65536], sealed[65536 + SEAL_OVERHEAD];
	uint8_t id[CHUNK_ID_LEN], id2[CHUNK_ID_LEN];
	const char *why;
	void *meta, *back;
	size_t meta_len, back_len;
	long n;

	assert_int_equal(seal_ctx_new(s, &c), 0);
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = "the quick brown fox jumps over the lazy dog\n"[i % 44];
	srand(1);
	for (size_t i = 0; i < sizeof(rnd); i++)
		rnd[i] = (char)rand();
	seal_chunk_id(c, text, sizeof(text), id);
	n = seal_chunk(c, id, text, sizeof(text), sealed);
	assert_true(n > 0 && n < 4096); /* compressed */
	assert_int_equal(seal_open_chunk(c, id, sealed, (size_t)n, out, sizeof(out), NULL, &why), 0);
	assert_memory_equal(out, text, sizeof(text));
	/* Every flipped byte is refused, or (without a key) it is one that
	 * zstd does not need and the bytes still match the id: never a wrong
	 * block. */
	for (long i = 0; i < n; i++) {
		int r;

		sealed[i] ^= 0x01;
		memset(out, 0, sizeof(out));
		r = seal_open_chunk(c, id, sealed, (size_t)n, out, sizeof(out), NULL, &why);
		if (keyed || r == 0)
			assert_int_equal(r, keyed ? -EBADMSG : 0);
		if (r == 0)
			assert_memory_equal(out, text, sizeof(text));
		else
			assert_int_equal(r, -EBADMSG);
		sealed[i] ^= 0x01;
	}
	/* with the index's checksum of the stored bytes, every flip is
	 * refused, with or without a key */
	{
		uint8_t check[SEAL_CHECK_LEN];

		seal_check(sealed, (size_t)n, check);
		assert_int_equal(seal_open_chunk(c, id, sealed, (size_t)n, out, sizeof(out), check, &why), 0);
		assert_memory_equal(out, text, sizeof(text));
		for (long i = 0; i < n; i++) {
			sealed[i] ^= 0x01;
			assert_int_equal(seal_open_chunk(c, id, sealed, (size_t)n, out, sizeof(out), check, &why),
					 -EBADMSG);
			sealed[i] ^= 0x01;
		}
	}
	/* a sealed chunk under another id */
	seal_chunk_id(c, rnd, sizeof(rnd), id2);
	assert_int_equal(seal_open_chunk(c, id2, sealed, (size_t)n, out, sizeof(out), NULL, &why), -EBADMSG);
	n = seal_chunk(c, id2, rnd, sizeof(rnd), sealed);
	assert_true(n >= (long)sizeof(rnd) && n <= (long)(sizeof(rnd) + SEAL_OVERHEAD)); /* not compressed */
	assert_int_equal(seal_open_chunk(c, id2, sealed, (size_t)n, out, sizeof(out), NULL, &why), 0);
	assert_memory_equal(out, rnd, sizeof(rnd));
	/* metadata: bound to its name when keyed */
	assert_int_equal(seal_meta(c, "maps/", text, sizeof(text), &meta, &meta_len), 0);
	assert_int_equal(seal_open_meta(c, "maps/", meta, meta_len, 1 << 20, &back, &back_len, &why), 0);
	assert_int_equal(back_len, sizeof(text));
	assert_memory_equal(back, text, sizeof(text));
	free(back);
	if (keyed)
		assert_int_equal(seal_open_meta(c, "index/", meta, meta_len, 1 << 20, &back, &back_len, &why), -EBADMSG);
	/* (without a key a metadata object is checked by its name, its
	 * SHA-256, before it is opened: repo2.c's get_addressed) */
	((uint8_t *)meta)[meta_len / 2] ^= 0x80;
	if (keyed)
		assert_int_equal(seal_open_meta(c, "maps/", meta, meta_len, 1 << 20, &back, &back_len, &why), -EBADMSG);
	free(meta);
	seal_ctx_free(c);
}

static void seal_plain(void **state)
{
	struct seal *s;

	(void)state;
	assert_int_equal(seal_new_plain(3, &s), 0);
	seal_round_trip(s, false);
	seal_free(s);
}

static void seal_keyed(void **state)
{
	struct json_object *params;
	struct seal *s, *again, *wrong;
	struct seal_ctx *c1, *c2;
	uint8_t id1[CHUNK_ID_LEN], id2[CHUNK_ID_LEN], plain[CHUNK_ID_LEN];
	static const char data[] = "some block";

	(void)state;
	assert_int_equal(seal_create_keyed("a good key", 10, 1000, 3, &s, &params), 0);
	seal_round_trip(s, true);
	/* the same key opens it; another is "wrong key", not damage */
	assert_int_equal(seal_new_keyed("a good key", 10, params, 3, &again), 0);
	assert_int_equal(seal_new_keyed("a bad key!", 10, params, 3, &wrong), -EACCES);
	/* ids are keyed: not SHA-256, and the same under the same key */
	assert_int_equal(seal_ctx_new(s, &c1), 0);
	assert_int_equal(seal_ctx_new(again, &c2), 0);
	seal_chunk_id(c1, data, sizeof(data), id1);
	seal_chunk_id(c2, data, sizeof(data), id2);
	seal_sha256(data, sizeof(data), plain);
	assert_memory_equal(id1, id2, CHUNK_ID_LEN);
	assert_memory_not_equal(id1, plain, CHUNK_ID_LEN);
	seal_ctx_free(c1);
	seal_ctx_free(c2);
	seal_free(again);
	seal_free(s);
	json_object_put(params);
}

static void manifest_refusals(void **state)
{
	static const char good[] =
		"{ \"backup\": 3, \"device\": \"d\", \"kind\": \"incremental\", \"parent\": 1, \"from\": \"nbd://x\","
		" \"size\": 131072, \"block_size\": 65536, \"generation\": null, \"changes_number\": null,"
		" \"bitmap\": null, \"time\": \"2026-11-30T01:02:03Z\", \"blocks\": 2, \"data_blocks\": 1,"
		" \"map\": \"maps/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\", \"index\": null }";
	static const char *const bad[][2] = {
		{ "\"backup\": 3", "\"backup\": 4" },
		{ "\"kind\": \"incremental\"", "\"kind\": \"partial\"" },
		{ "\"parent\": 1", "\"parent\": 3" },
		{ "\"parent\": 1", "\"parent\": null" },
		{ "\"blocks\": 2", "\"blocks\": 3" },
		{ "\"data_blocks\": 1", "\"data_blocks\": 5" },
		{ "\"block_size\": 65536", "\"block_size\": 1000" },
		{ "maps/0123", "maps/../0" },
		{ "\"device\": \"d\"", "\"device\": \"\"" },
		{ "2026-11-30T01:02:03Z", "yesterday" },
	};
	struct repo2_backup b = { .num = 3 };

	(void)state;
	repo2_parse_manifest(&b, good, "m");
	assert_null(b.error);
	assert_int_equal(b.parent, 1);
	assert_int_equal(b.unix_time, 1796000523LL);
	repo2_backup_clear(&b);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[sizeof(good) + 64], *p;

		strcpy(text, good);
		p = strstr(text, bad[i][0]);
		assert_non_null(p);
		memmove(p + strlen(bad[i][1]), p + strlen(bad[i][0]), strlen(p + strlen(bad[i][0])) + 1);
		memcpy(p, bad[i][1], strlen(bad[i][1]));
		b = (struct repo2_backup){ .num = 3 };
		repo2_parse_manifest(&b, text, "m");
		assert_non_null(b.error);
		repo2_backup_clear(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(keep_last_per_device),
		cmocka_unit_test(keep_daily_weekly_monthly),
		cmocka_unit_test(no_policy_keeps_all),
		cmocka_unit_test(chunk_table_grows_and_claims),
		cmocka_unit_test(seal_plain),
		cmocka_unit_test(seal_keyed),
		cmocka_unit_test(manifest_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
