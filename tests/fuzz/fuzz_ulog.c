/* libFuzzer harness for the dm userspace-log decoder: the bytes are a run of
 * packets, each a 2-byte little-endian length and that many bytes of
 * cn_msg + dm_ulog_request, answered in turn by one server, so that a CTR
 * made by one packet is used by the next. Disk logs are kept out: they open
 * paths, and MAJOR:MINOR could name a real device of this machine. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "dirtylog/ulog_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char out[4096];
	struct ulog_server *s;

	if (memmem(data, size, "disk", 4))
		return 0;
	log_set_level(LOG_LEVEL_ERROR);
	if (ulog_server_new(NULL, &s) < 0)
		abort();
	while (size >= 2) {
		size_t len = (size_t)data[0] | (size_t)data[1] << 8;

		data += 2;
		size -= 2;
		if (len > size)
			len = size;
		/* A copy of exactly LEN bytes, so ASan sees any read past it. */
		unsigned char *pkt = malloc(len ? len : 1);

		if (!pkt)
			abort();
		memcpy(pkt, data, len);
		ulog_cn_handle(s, pkt, len, out, sizeof(out));
		free(pkt);
		data += len;
		size -= len;
	}
	ulog_server_free(s);
	return 0;
}
