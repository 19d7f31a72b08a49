/* libFuzzer harness for the backup repository's parsers (backup/repo.c): the
 * first byte picks one, the rest is its input. 0: a backup's manifest.json;
 * 1: a backup's index, with the manifest's checksum made to match (else
 * nothing gets past it) and its entry count taken from the header. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backup/repo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct backup_info b = { .num = 3, .changes_number = -1, .parent = -1 };
	struct repo_entry *e = NULL;
	char *why = NULL;
	uint64_t n = 0;

	if (size < 1)
		return 0;
	if (data[0] == 0) {
		char *text = strndup((const char *)data + 1, size - 1);

		if (!text)
			return 0;
		repo_parse_manifest(65536, &b, text, "manifest.json");
		free(text);
	} else {
		const char *buf = (const char *)data + 1;
		size_t len = size - 1;

		b.size = (uint64_t)(data[0] & 0x7f) * 65536 + (data[0] & 0x80 ? 4096 : 0) + 512;
		b.block_size = 65536;
		b.data_size = 1 << 20;
		if (len >= 24)
			memcpy(&b.blocks, buf + 16, 8);
		repo_hash(buf, len, b.index_hash);
		if (repo_parse_index(&b, buf, len, "index", &why, &e, &n) == 0 && n > 0 &&
		    (e[n - 1].block * 65536 >= b.size))
			abort(); /* an entry past the image got through */
	}
	free(e);
	free(why);
	free(b.from);
	free(b.generation);
	free(b.bitmap);
	free(b.time);
	free(b.error);
	return 0;
}
