/* How a version 2 repository protects what it stores (docs/backup-repo.md,
 * "Chunks" and "Encryption"): a chunk's id, its compression with zstd, and,
 * in a repository made with a key, authenticated encryption (AES-256-GCM) of
 * chunks and metadata with keys derived from the key file. Nothing here
 * knows where the bytes go. */
#ifndef BDF_BACKUP_SEAL_H
#define BDF_BACKUP_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHUNK_ID_LEN 32
/* What sealing adds to a chunk at most, beyond its bytes. */
#define SEAL_OVERHEAD 64
#define SEAL_KDF_ITERATIONS_DEFAULT 200000u

struct json_object;

/* The repository's keys and settings: shared by every thread, read-only
 * once made. */
struct seal;
/* A thread's working state (compression and cipher contexts, scratch). */
struct seal_ctx;

/* A repository without a key: chunk ids are SHA-256, nothing is encrypted.
 * LEVEL: zstd's, 0 for no compression. */
int seal_new_plain(int level, struct seal **out);

/* From the key file's bytes (a trailing newline is not part of the key) and
 * repo.json's "encryption" object; -EACCES (printed: "wrong key") if the key
 * is not the one the repository was made with, -EINVAL (printed) if the
 * object is not one this version reads. */
int seal_new_keyed(const void *secret, size_t len, struct json_object *params, int level, struct seal **out);
/* A new key setup for a new repository: *PARAMS gets the "encryption" object
 * for repo.json (a random salt, and a check of the key). */
int seal_create_keyed(const void *secret, size_t len, unsigned iterations, int level, struct seal **out,
		      struct json_object **params);
/* Read a key file: its bytes without a trailing newline; errors printed. */
int seal_read_key_file(const char *path, char **secret, size_t *len);
void seal_free(struct seal *s);
bool seal_encrypted(const struct seal *s);
int seal_level(const struct seal *s);

int seal_ctx_new(const struct seal *s, struct seal_ctx **out);
void seal_ctx_free(struct seal_ctx *c);

/* The chunk id of DATA: SHA-256, or HMAC-SHA256 under the id key in an
 * encrypted repository, so that the store learns nothing from ids. */
void seal_chunk_id(struct seal_ctx *c, const void *data, size_t len, uint8_t id[CHUNK_ID_LEN]);

/* Seal a chunk's LEN bytes (id ID) into OUT (room for LEN + SEAL_OVERHEAD):
 * compressed if that saves at least an eighth, then encrypted. The stored
 * length is returned (> 0), or a negative errno. */
long seal_chunk(struct seal_ctx *c, const uint8_t id[CHUNK_ID_LEN], const void *data, size_t len, void *out);
/* Undo seal_chunk: RAW_LEN bytes into OUT, checked. -EBADMSG if the stored
 * bytes were changed; *WHY (static) says how. The check: with a key, the
 * authentication tag (which binds the chunk to ID); without one, CHECK, the
 * XXH3-128 of the stored bytes that the index recorded; and with CHECK NULL
 * (verify --deep, gc), also the id recomputed from the bytes. */
int seal_open_chunk(struct seal_ctx *c, const uint8_t id[CHUNK_ID_LEN], const void *in, size_t in_len,
		    void *out, size_t raw_len, const uint8_t *check, const char **why);
/* CHECK for seal_open_chunk: XXH3-128 of the stored bytes. */
#define SEAL_CHECK_LEN 16
void seal_check(const void *in, size_t len, uint8_t out[SEAL_CHECK_LEN]);

/* Metadata objects (indexes, block maps, manifests): compressed, and with a
 * key encrypted with NAME (the object's key in the store) as associated
 * data, so that an object moved to another name fails to open. A new buffer
 * (malloc'd) into *OUT. */
int seal_meta(struct seal_ctx *c, const char *name, const void *data, size_t len, void **out, size_t *out_len);
/* -EBADMSG (with *WHY) if damaged, not sealed under NAME, or more than
 * MAX_LEN bytes (what the caller knows the object can hold). */
int seal_open_meta(struct seal_ctx *c, const char *name, const void *in, size_t in_len, size_t max_len,
		   void **out, size_t *out_len, const char **why);

/* SHA-256 of DATA (object names of content-addressed objects). */
void seal_sha256(const void *data, size_t len, uint8_t out[32]);
void seal_hex(const uint8_t *bytes, size_t n, char *out /* 2n + 1 */);
int seal_unhex(const char *hex, uint8_t *bytes, size_t n);

#endif
