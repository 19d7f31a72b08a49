/* libFuzzer harness for the backup repository's parsers and chain rules
 * (backup/repo.c): the first byte picks one, the rest is its input.
 * 0: a backup's manifest.json;
 * 1: a repository of several backups, three bytes each (kind, parent, size),
 *    made into manifests, parsed, checked with repo_check_chain, and each
 *    usable one's chain walked with repo_chain as restore does; the verdicts
 *    are checked against the rules of docs/backup-repo.md computed here;
 * else: a backup's index, with the manifest's checksum made to match (else
 *    nothing gets past it) and its entry count taken from the header. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] == 0)
		one_manifest(data + 1, size - 1);
	else if (data[0] == 1)
		chain(data + 1, size - 1);
	else
		one_index(data[0], data + 1, size - 1);
	return 0;
}
