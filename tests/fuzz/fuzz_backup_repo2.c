/* libFuzzer harness for repository version 2's parsers (backup/repo2.c,
 * backup/seal.c): the first byte picks one, the rest is its input.
 * 0: repo.json;
 * 1: a manifest (backups/000003.json): a usable one must have kept the rules
 *    the parser promises (parent below its number, blocks from size);
 * 2: an index object's bytes: every entry handed on must be in range;
 * 3: a sealed metadata object, opened without a key and with one: what opens
 *    must be its stated length;
 * 4: a sealed chunk, opened without a key and with one, against the id of a
 *    fixed block: what opens must be that block, byte for byte;
 * 5: the same, with the input's own bytes as the block and a fresh seal of
 *    them: it must open, and a copy with one byte flipped must not open
 *    with the key. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "backup/repo2.h"
#include "backup/seal.h"

static struct seal *plain, *keyed;
static struct seal_ctx *pc, *kc;
static char block[4096];
static uint8_t block_id_plain[CHUNK_ID_LEN], block_id_keyed[CHUNK_ID_LEN];

static void setup(void)
{
	struct json_object *params;

	if (plain)
		return;
	if (seal_new_plain(3, &plain) || seal_create_keyed("fuzzing key", 11, 1000, 3, &keyed, &params) ||
	    seal_ctx_new(plain, &pc) || seal_ctx_new(keyed, &kc))
		abort();
	json_object_put(params);
	for (size_t i = 0; i < sizeof(block); i++)
		block[i] = (char)(i * 7);
	seal_chunk_id(pc, block, sizeof(block), block_id_plain);
	seal_chunk_id(kc, block, sizeof(block), block_id_keyed);
}

static char *text_of(const uint8_t *p, size_t n)
{
	char *t = malloc(n + 1);

	if (!t)
		abort();
	memcpy(t, p, n);
	t[n] = 0;
	return t;
}

static void check_entry(void *opaque, const uint8_t id[CHUNK_ID_LEN], const uint8_t pack[32],
			const struct chunk_loc *loc)
{
	(void)opaque;
	(void)id;
	(void)pack;
	if (!loc->stored_len || !loc->raw_len || loc->raw_len > (64u << 20) || loc->offset > UINT32_MAX)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *why;
	void *out;
	size_t out_len;

	setup();
	if (size < 1)
		return 0;
	switch (data[0]) {
	case 0: {
		struct repo2 r = { 0 };
		struct json_object *enc = NULL;
		char *t = text_of(data + 1, size - 1);
		int level;

		if (repo2_parse_repo_json(t, &r, &enc, &level) == 0 &&
		    (r.block_size < 4096 || (r.block_size & (r.block_size - 1)) || level < 0 || level > 19))
			abort();
		json_object_put(enc);
		free(t);
		break;
	}
	case 1: {
		struct repo2_backup b = { .num = 3 };
		char *t = text_of(data + 1, size - 1);

		repo2_parse_manifest(&b, t, "backups/000003.json");
		if (!b.error && (b.parent >= 3 || b.full != (b.parent < 0) || !b.map || !b.device ||
				 b.blocks != (b.size + b.block_size - 1) / b.block_size || b.data_blocks > b.blocks))
			abort();
		repo2_backup_clear(&b);
		free(t);
		break;
	}
	case 2:
		repo2_parse_index(data + 1, size - 1, check_entry, NULL);
		break;
	case 3:
		if (seal_open_meta(pc, "maps/", data + 1, size - 1, 1 << 24, &out, &out_len, &why) == 0)
			free(out);
		if (seal_open_meta(kc, "maps/", data + 1, size - 1, 1 << 24, &out, &out_len, &why) == 0)
			free(out);
		break;
	case 4: {
		char back[sizeof(block)];

		if (seal_open_chunk(pc, block_id_plain, data + 1, size - 1, back, sizeof(back), NULL, &why) == 0 &&
		    memcmp(back, block, sizeof(block)))
			abort();
		if (seal_open_chunk(kc, block_id_keyed, data + 1, size - 1, back, sizeof(back), NULL, &why) == 0 &&
		    memcmp(back, block, sizeof(block)))
			abort();
		break;
	}
	default: {
		size_t n = size - 1;
		uint8_t id[CHUNK_ID_LEN];
		char *sealed, *back;
		long len;

		if (n == 0)
			break;
		sealed = malloc(n + SEAL_OVERHEAD);
		back = malloc(n);
		seal_chunk_id(kc, data + 1, n, id);
		len = seal_chunk(kc, id, data + 1, n, sealed);
		if (len <= 0 || seal_open_chunk(kc, id, sealed, (size_t)len, back, n, NULL, &why) || memcmp(back, data + 1, n))
			abort();
		sealed[data[0] % len] ^= 0x20;
		if (seal_open_chunk(kc, id, sealed, (size_t)len, back, n, NULL, &why) == 0)
			abort();
		free(sealed);
		free(back);
		break;
	}
	}
	return 0;
}
