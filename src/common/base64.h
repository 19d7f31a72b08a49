/* Base64 (RFC 4648, with padding) for binary data inside JSON. */
#ifndef BDF_COMMON_BASE64_H
#define BDF_COMMON_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Encode LEN bytes; a malloc'd NUL-terminated string, or NULL. */
char *base64_encode(const uint8_t *data, size_t len);
/* Decode S into a malloc'd buffer (*OUT, *OUTLEN). 0, or -EINVAL for bad input. */
int base64_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen);

#endif
