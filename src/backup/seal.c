/* Chunk ids, compression and encryption of a version 2 repository (seal.h).
 *
 * A sealed chunk is [type][payload] (type 0: the bytes, 1: a zstd frame); in
 * an encrypted repository that is the plaintext of AES-256-GCM, stored as
 * nonce (12) || ciphertext || tag (16), with "chunk:" and the chunk id as
 * associated data. A sealed metadata object is the same with an 8-byte
 * little-endian length after the type, and the object's name as associated
 * data; without a key it starts with the magic "BDFM".
 *
 * Keys: PBKDF2-HMAC-SHA256 of the key file's bytes (a passphrase or random
 * bytes) with repo.json's salt gives a master key; HMAC-SHA256 of the master
 * key over three labels gives the encryption key, the chunk-id key and a
 * check value stored in repo.json, so a wrong key is told apart from a
 * damaged repository. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <json-c/json.h>
#include <xxhash.h>
#include <zstd.h>

#include "backup/seal.h"
#include "backup/util.h"
#include "common/io.h"

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define SALT_LEN 16
#define META_MAGIC "BDFM"
#define TYPE_RAW 0
#define TYPE_ZSTD 1
/* A key file is read whole: anything larger is not a key. */
#define KEY_FILE_MAX 4096

struct seal {
	bool keyed;
	int level;
	uint8_t enc_key[KEY_LEN], id_key[KEY_LEN];
};

struct seal_ctx {
	const struct seal *s;
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	gnutls_aead_cipher_hd_t aead;
	gnutls_hmac_hd_t id_mac;
	uint8_t *scratch;
	size_t scratch_len;
};

void seal_sha256(const void *data, size_t len, uint8_t out[32])
{
	gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, out);
}

void seal_hex(const uint8_t *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int seal_unhex(const char *hex, uint8_t *bytes, size_t n)
{
	if (strlen(hex) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		bytes[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static void label_mac(const uint8_t master[KEY_LEN], const char *label, uint8_t out[KEY_LEN])
{
	gnutls_hmac_fast(GNUTLS_MAC_SHA256, master, KEY_LEN, label, strlen(label), out);
}

static int derive(const void *secret, size_t len, const uint8_t *salt, unsigned iterations, struct seal *s,
		  uint8_t check[KEY_LEN])
{
	gnutls_datum_t key = { (unsigned char *)secret, (unsigned)len };
	gnutls_datum_t sd = { (unsigned char *)salt, SALT_LEN };
	uint8_t master[KEY_LEN];

	if (gnutls_pbkdf2(GNUTLS_MAC_SHA256, &key, &sd, iterations, master, KEY_LEN) < 0) {
		bk_error("deriving the key failed");
		return -EINVAL;
	}
	label_mac(master, "bdfilter-backup encryption key", s->enc_key);
	label_mac(master, "bdfilter-backup chunk id key", s->id_key);
	label_mac(master, "bdfilter-backup key check", check);
	memset(master, 0, sizeof(master));
	s->keyed = true;
	return 0;
}

int seal_new_plain(int level, struct seal **out)
{
	struct seal *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->level = level;
	*out = s;
	return 0;
}

int seal_create_keyed(const void *secret, size_t len, unsigned iterations, int level, struct seal **out,
		      struct json_object **params)
{
	uint8_t salt[SALT_LEN], check[KEY_LEN];
	char salt_hex[2 * SALT_LEN + 1], check_hex[2 * KEY_LEN + 1];
	struct seal *s = calloc(1, sizeof(*s));
	struct json_object *p;

	if (!s)
		return -ENOMEM;
	s->level = level;
	if (gnutls_rnd(GNUTLS_RND_RANDOM, salt, sizeof(salt)) < 0 ||
	    derive(secret, len, salt, iterations, s, check) < 0) {
		free(s);
		return -EIO;
	}
	seal_hex(salt, SALT_LEN, salt_hex);
	seal_hex(check, KEY_LEN, check_hex);
	p = json_object_new_object();
	json_object_object_add(p, "cipher", json_object_new_string("aes-256-gcm"));
	json_object_object_add(p, "chunk_id", json_object_new_string("hmac-sha256"));
	json_object_object_add(p, "kdf", json_object_new_string("pbkdf2-sha256"));
	json_object_object_add(p, "iterations", json_object_new_int64(iterations));
	json_object_object_add(p, "salt", json_object_new_string(salt_hex));
	json_object_object_add(p, "key_check", json_object_new_string(check_hex));
	*params = p;
	*out = s;
	return 0;
}

static const char *str_field(struct json_object *o, const char *name)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int seal_new_keyed(const void *secret, size_t len, struct json_object *params, int level, struct seal **out)
{
	const char *cipher = str_field(params, "cipher"), *kdf = str_field(params, "kdf");
	const char *id = str_field(params, "chunk_id");
	const char *salt_hex = str_field(params, "salt"), *check_hex = str_field(params, "key_check");
	uint8_t salt[SALT_LEN], want[KEY_LEN], check[KEY_LEN];
	struct json_object *it;
	int64_t iterations;
	struct seal *s;

	if (!cipher || strcmp(cipher, "aes-256-gcm") || !kdf || strcmp(kdf, "pbkdf2-sha256") || !id ||
	    strcmp(id, "hmac-sha256") || !salt_hex || seal_unhex(salt_hex, salt, SALT_LEN) < 0 || !check_hex ||
	    seal_unhex(check_hex, want, KEY_LEN) < 0 || !json_object_object_get_ex(params, "iterations", &it) ||
	    !json_object_is_type(it, json_type_int) || (iterations = json_object_get_int64(it)) < 1000 ||
	    iterations > 100000000) {
		bk_error("repo.json: \"encryption\" is not one this version reads (aes-256-gcm, pbkdf2-sha256, "
			 "hmac-sha256, a 16-byte salt and a key check)");
		return -EINVAL;
	}
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->level = level;
	if (derive(secret, len, salt, (unsigned)iterations, s, check) < 0) {
		free(s);
		return -EIO;
	}
	if (gnutls_memcmp(check, want, KEY_LEN) != 0) {
		memset(s, 0, sizeof(*s));
		free(s);
		bk_error("wrong key: the repository was made with another key");
		return -EACCES;
	}
	*out = s;
	return 0;
}

int seal_read_key_file(const char *path, char **secret, size_t *len)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	char *buf;
	ssize_t n;

	if (fd < 0) {
		bk_error("--key-file %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > KEY_FILE_MAX) {
		close(fd);
		bk_error("--key-file %s: not a regular file of at most %d bytes", path, KEY_FILE_MAX);
		return -EINVAL;
	}
	if (!(buf = malloc(KEY_FILE_MAX + 1))) {
		close(fd);
		return -ENOMEM;
	}
	n = io_read_all(fd, buf, KEY_FILE_MAX + 1);
	close(fd);
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n < 8) {
		memset(buf, 0, KEY_FILE_MAX + 1);
		free(buf);
		bk_error("--key-file %s: %s", path, n < 0 ? strerror((int)-n) : "a key of at least 8 bytes is needed");
		return -EINVAL;
	}
	*secret = buf;
	*len = (size_t)n;
	return 0;
}

void seal_free(struct seal *s)
{
	if (s) {
		memset(s, 0, sizeof(*s));
		free(s);
	}
}

bool seal_encrypted(const struct seal *s)
{
	return s->keyed;
}

int seal_level(const struct seal *s)
{
	return s->level;
}

int seal_ctx_new(const struct seal *s, struct seal_ctx **out)
{
	struct seal_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->s = s;
	c->cctx = ZSTD_createCCtx();
	c->dctx = ZSTD_createDCtx();
	if (!c->cctx || !c->dctx)
		goto fail;
	if (s->level > 0)
		ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, s->level);
	if (s->keyed) {
		gnutls_datum_t k = { (unsigned char *)s->enc_key, KEY_LEN };

		if (gnutls_aead_cipher_init(&c->aead, GNUTLS_CIPHER_AES_256_GCM, &k) < 0)
			goto fail;
		if (gnutls_hmac_init(&c->id_mac, GNUTLS_MAC_SHA256, s->id_key, KEY_LEN) < 0) {
			c->id_mac = NULL;
			goto fail;
		}
	}
	*out = c;
	return 0;
fail:
	seal_ctx_free(c);
	bk_error("cannot set up compression or encryption");
	return -ENOMEM;
}

void seal_ctx_free(struct seal_ctx *c)
{
	if (!c)
		return;
	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	if (c->aead)
		gnutls_aead_cipher_deinit(c->aead);
	if (c->id_mac)
		gnutls_hmac_deinit(c->id_mac, NULL);
	free(c->scratch);
	free(c);
}

static uint8_t *scratch(struct seal_ctx *c, size_t len)
{
	if (c->scratch_len < len) {
		uint8_t *p = realloc(c->scratch, len);

		if (!p)
			return NULL;
		c->scratch = p;
		c->scratch_len = len;
	}
	return c->scratch;
}

void seal_chunk_id(struct seal_ctx *c, const void *data, size_t len, uint8_t id[CHUNK_ID_LEN])
{
	if (c->s->keyed) {
		gnutls_hmac(c->id_mac, data, len);
		gnutls_hmac_output(c->id_mac, id); /* and resets it */
	} else {
		seal_sha256(data, len, id);
	}
}

/* [type][payload] of DATA into P (room for 1 + ZSTD_compressBound(LEN)):
 * zstd when it saves an eighth. Its length. */
static size_t pack_plain(struct seal_ctx *c, const void *data, size_t len, uint8_t *p, size_t room)
{
	if (c->s->level > 0 && len >= 64) {
		size_t z = ZSTD_compress2(c->cctx, p + 1, room - 1, data, len);

		if (!ZSTD_isError(z) && z <= len - len / 8) {
			p[0] = TYPE_ZSTD;
			return 1 + z;
		}
	}
	p[0] = TYPE_RAW;
	memcpy(p + 1, data, len);
	return 1 + len;
}

static int encrypt(struct seal_ctx *c, const void *ad, size_t ad_len, const uint8_t *plain, size_t len,
		   uint8_t *out, size_t *out_len)
{
	size_t ct_len = len + TAG_LEN;

	if (gnutls_rnd(GNUTLS_RND_NONCE, out, NONCE_LEN) < 0 ||
	    gnutls_aead_cipher_encrypt(c->aead, out, NONCE_LEN, ad, ad_len, TAG_LEN, plain, len, out + NONCE_LEN,
				       &ct_len) < 0) {
		bk_error("encryption failed");
		return -EIO;
	}
	*out_len = NONCE_LEN + ct_len;
	return 0;
}

static int decrypt(struct seal_ctx *c, const void *ad, size_t ad_len, const uint8_t *in, size_t in_len,
		   uint8_t *out, size_t *out_len)
{
	size_t pt_len = in_len;

	if (in_len < NONCE_LEN + TAG_LEN + 1)
		return -EBADMSG;
	if (gnutls_aead_cipher_decrypt(c->aead, in, NONCE_LEN, ad, ad_len, TAG_LEN, in + NONCE_LEN,
				       in_len - NONCE_LEN, out, &pt_len) < 0)
		return -EBADMSG;
	*out_len = pt_len;
	return 0;
}

long seal_chunk(struct seal_ctx *c, const uint8_t id[CHUNK_ID_LEN], const void *data, size_t len, void *out)
{
	size_t room = 1 + ZSTD_compressBound(len), n;
	uint8_t ad[6 + CHUNK_ID_LEN], *p;

	if (!c->s->keyed) {
		/* Compress into the scratch buffer: OUT only has room for the
		 * raw bytes and the overhead, and a frame can be larger. */
		if (!(p = scratch(c, room)))
			return -ENOMEM;
		n = pack_plain(c, data, len, p, room);
		memcpy(out, p, n);
		return (long)n;
	}
	if (!(p = scratch(c, room)))
		return -ENOMEM;
	n = pack_plain(c, data, len, p, room);
	memcpy(ad, "chunk:", 6);
	memcpy(ad + 6, id, CHUNK_ID_LEN);
	if (encrypt(c, ad, sizeof(ad), p, n, out, &n) < 0)
		return -EIO;
	return (long)n;
}

/* Unpack [type][payload] (LEN bytes at P) into OUT, which must come out
 * exactly RAW_LEN bytes. */
static int unpack(struct seal_ctx *c, const uint8_t *p, size_t len, void *out, size_t raw_len, const char **why)
{
	if (len < 1) {
		*why = "empty";
		return -EBADMSG;
	}
	if (p[0] == TYPE_RAW) {
		if (len - 1 != raw_len) {
			*why = "wrong length";
			return -EBADMSG;
		}
		memcpy(out, p + 1, raw_len);
		return 0;
	}
	if (p[0] == TYPE_ZSTD) {
		size_t n = ZSTD_decompressDCtx(c->dctx, out, raw_len, p + 1, len - 1);

		if (ZSTD_isError(n) || n != raw_len) {
			*why = "does not decompress";
			return -EBADMSG;
		}
		return 0;
	}
	*why = "unknown type";
	return -EBADMSG;
}

void seal_check(const void *in, size_t len, uint8_t out[SEAL_CHECK_LEN])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits(in, len));
	memcpy(out, c.digest, SEAL_CHECK_LEN);
}

int seal_open_chunk(struct seal_ctx *c, const uint8_t id[CHUNK_ID_LEN], const void *in, size_t in_len,
		    void *out, size_t raw_len, const uint8_t *check, const char **why)
{
	const uint8_t *p = in;
	size_t len = in_len;
	uint8_t sum[CHUNK_ID_LEN];
	int e;

	if (c->s->keyed) {
		uint8_t ad[6 + CHUNK_ID_LEN], *plain = scratch(c, in_len);

		if (!plain)
			return -ENOMEM;
		memcpy(ad, "chunk:", 6);
		memcpy(ad + 6, id, CHUNK_ID_LEN);
		if (decrypt(c, ad, sizeof(ad), in, in_len, plain, &len) < 0) {
			*why = "fails authentication (tampered, or not this chunk)";
			return -EBADMSG;
		}
		p = plain;
	} else if (check) {
		seal_check(in, in_len, sum);
		if (memcmp(sum, check, SEAL_CHECK_LEN) != 0) {
			*why = "does not match its checksum";
			return -EBADMSG;
		}
	}
	if ((e = unpack(c, p, len, out, raw_len, why)) < 0)
		return e;
	/* The tag or the checksum was enough; --deep recomputes the id too. */
	if (check)
		return 0;
	seal_chunk_id(c, out, raw_len, sum);
	if (memcmp(sum, id, CHUNK_ID_LEN) != 0) {
		*why = "does not match its id";
		return -EBADMSG;
	}
	return 0;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int seal_meta(struct seal_ctx *c, const char *name, const void *data, size_t len, void **out, size_t *out_len)
{
	size_t room = 9 + ZSTD_compressBound(len), n;
	uint8_t *plain = malloc(room), *buf;

	if (!plain)
		return -ENOMEM;
	/* [type][length][payload]: the length is that of the bytes, which the
	 * reader allocates before it decompresses. */
	n = pack_plain(c, data, len, plain + 8, room - 8);
	plain[0] = plain[8];
	put_le64(plain + 1, len);
	n += 8;
	if (!c->s->keyed) {
		if (!(buf = malloc(4 + n))) {
			free(plain);
			return -ENOMEM;
		}
		memcpy(buf, META_MAGIC, 4);
		memcpy(buf + 4, plain, n);
		*out_len = 4 + n;
	} else {
		if (!(buf = malloc(n + NONCE_LEN + TAG_LEN))) {
			free(plain);
			return -ENOMEM;
		}
		if (encrypt(c, name, strlen(name), plain, n, buf, out_len) < 0) {
			free(plain);
			free(buf);
			return -EIO;
		}
	}
	free(plain);
	*out = buf;
	return 0;
}

/* A zstd frame of RAW_LEN bytes into a buffer grown as the output comes: a
 * damaged (or hostile) length costs memory only for what really comes out. */
static int inflate_meta(struct seal_ctx *c, const uint8_t *in, size_t in_len, size_t raw_len, uint8_t **out)
{
	ZSTD_inBuffer ib = { in, in_len, 0 };
	size_t cap = raw_len < (1u << 20) ? raw_len : (1u << 20), r;
	uint8_t *buf = malloc(cap ? cap : 1);
	ZSTD_outBuffer ob = { buf, cap, 0 };

	if (!buf)
		return -ENOMEM;
	ZSTD_DCtx_reset(c->dctx, ZSTD_reset_session_only);
	for (;;) {
		r = ZSTD_decompressStream(c->dctx, &ob, &ib);
		if (ZSTD_isError(r) || ob.pos > raw_len)
			break;
		if (r == 0) {
			if (ob.pos != raw_len || ib.pos != ib.size)
				break;
			*out = buf;
			return 0;
		}
		if (ob.pos == ob.size) {
			uint8_t *nb;

			if (cap >= raw_len)
				break; /* more than it said */
			cap = cap * 2 < raw_len ? cap * 2 : raw_len;
			if (!(nb = realloc(buf, cap))) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			ob.dst = buf;
			ob.size = cap;
		} else if (ib.pos == ib.size) {
			break; /* truncated */
		}
	}
	free(buf);
	return -EBADMSG;
}

int seal_open_meta(struct seal_ctx *c, const char *name, const void *in, size_t in_len, size_t max_len,
		   void **out, size_t *out_len, const char **why)
{
	const uint8_t *p = in;
	uint8_t *plain = NULL, *buf;
	size_t len = in_len;
	uint64_t raw_len;
	int e;

	if (c->s->keyed) {
		if (!(plain = malloc(in_len ? in_len : 1)))
			return -ENOMEM;
		if (decrypt(c, name, strlen(name), in, in_len, plain, &len) < 0) {
			free(plain);
			*why = "fails authentication (tampered, or moved from another name)";
			return -EBADMSG;
		}
		p = plain;
	} else {
		if (len < 4 || memcmp(p, META_MAGIC, 4) != 0) {
			*why = "not a sealed object";
			return -EBADMSG;
		}
		p += 4;
		len -= 4;
	}
	if (len < 9) {
		free(plain);
		*why = "truncated";
		return -EBADMSG;
	}
	if ((raw_len = get_le64(p + 1)) > max_len) {
		free(plain);
		*why = "larger than it can be";
		return -EBADMSG;
	}
	if (p[0] == TYPE_RAW && len - 9 == raw_len) {
		if ((buf = malloc(raw_len ? raw_len : 1)))
			memcpy(buf, p + 9, raw_len);
		e = buf ? 0 : -ENOMEM;
	} else if (p[0] == TYPE_ZSTD) {
		if ((e = inflate_meta(c, p + 9, len - 9, raw_len, &buf)) == -EBADMSG)
			*why = "does not decompress";
	} else {
		*why = "wrong length or type";
		e = -EBADMSG;
	}
	free(plain);
	if (e < 0)
		return e;
	*out = buf;
	*out_len = raw_len;
	return 0;
}
