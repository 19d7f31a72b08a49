/* Base64 (see base64.h). */
#include "common/base64.h"

#include <errno.h>
#include <stdlib.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *base64_encode(const uint8_t *data, size_t len)
{
	char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];

		*p++ = alphabet[v >> 18];
		*p++ = alphabet[(v >> 12) & 63];
		*p++ = alphabet[(v >> 6) & 63];
		*p++ = alphabet[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);

		*p++ = alphabet[v >> 18];
		*p++ = alphabet[(v >> 12) & 63];
		*p++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
		*p++ = '=';
	}
	*p = '\0';
	return out;
}

static int value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen)
{
	uint8_t *buf, *p;
	size_t pad = 0;

	if (slen % 4)
		return -EINVAL;
	if (slen >= 1 && s[slen - 1] == '=')
		pad++;
	if (slen >= 2 && s[slen - 2] == '=')
		pad++;
	buf = malloc(slen / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	p = buf;
	for (size_t i = 0; i < slen; i += 4) {
		int v[4];

		for (int k = 0; k < 4; k++) {
			v[k] = value(s[i + k]);
			/* '=' only as the last one or two characters */
			if (v[k] < 0 && !(s[i + k] == '=' && i + 4 == slen && k >= 4 - (int)pad)) {
				free(buf);
				return -EINVAL;
			}
			if (v[k] < 0)
				v[k] = 0;
		}
		*p++ = (uint8_t)(v[0] << 2 | v[1] >> 4);
		*p++ = (uint8_t)(v[1] << 4 | v[2] >> 2);
		*p++ = (uint8_t)(v[2] << 6 | v[3]);
	}
	*out = buf;
	*outlen = (size_t)(p - buf) - pad;
	return 0;
}
