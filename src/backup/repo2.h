/* The backup repository, version 2 (docs/backup-repo.md): content-addressed
 * chunks in packs, a complete block map per backup, compressed and
 * optionally encrypted, on an object store (a directory or S3). This file
 * owns the format: repo.json, backups/N.json (manifests), maps/, index/ and
 * packs/. A backup becomes visible when its manifest is written, after
 * everything it names is stored; anything a crashed run left is unreferenced
 * and removed by the next gc. */
#ifndef BDF_BACKUP_REPO2_H
#define BDF_BACKUP_REPO2_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/seal.h"
#include "backup/store.h"

#define REPO2_VERSION 2
#define REPO2_PACK_TARGET (16u << 20) /* a pack is stored once it holds this much */
#define REPO2_LEVEL_DEFAULT 3

struct json_object;

/* A backup's manifest. */
struct repo2_backup {
	unsigned num;
	char *device; /* the name the backups of one device go under */
	bool full;
	int parent; /* the backup of the same device before it; -1 for a full */
	char *from, *generation, *bitmap, *time;
	int64_t changes_number; /* -1 if none */
	int64_t unix_time;      /* TIME in seconds (for retention) */
	uint64_t size;
	uint32_t block_size;
	uint64_t blocks;        /* in the image */
	uint64_t data_blocks;   /* of those, not zero */
	uint64_t read_blocks;   /* read from the server for this backup */
	uint64_t new_chunks, new_bytes, stored_bytes; /* what it added: raw and as stored */
	char *map;   /* its block map's object */
	char *index; /* the chunk index object it wrote, or NULL */
	char *error; /* unusable: why (the fields above but NUM may be unset) */
};

/* Where a chunk is. */
struct chunk_loc {
	uint32_t pack; /* into repo2.packs */
	uint32_t stored_len, raw_len;
	uint64_t offset;
	uint8_t check[SEAL_CHECK_LEN]; /* XXH3-128 of the stored bytes */
};
#define CHUNK_PENDING UINT32_MAX /* claimed by a backup, not yet in a pack */

struct chunk_table; /* id -> chunk_loc, thread-safe */

struct repo2 {
	struct store *st;
	const char *url;
	uint32_t block_size;
	struct seal *seal;
	struct repo2_backup *b; /* by number, ascending */
	unsigned n;
	/* Loaded by repo2_load_chunks: every chunk the index objects list. */
	struct chunk_table *chunks;
	pthread_mutex_t packs_lock;
	uint8_t (*packs)[32]; /* pack ids */
	uint32_t n_packs, packs_cap;
	char **index_keys; /* the index objects read */
	size_t n_index;
};

struct repo2_create {
	uint32_t block_size;
	int level;            /* zstd level; 0: no compression */
	const char *key_file; /* NULL: no encryption */
};

/* Open the repository at URL (a directory or s3://) and take its lock in
 * MODE; with CREATE (not NULL) make it if it holds nothing yet. KEY_FILE:
 * the key of an encrypted repository (required then, refused otherwise).
 * Reads every manifest: one that cannot be used gets an error, reported by
 * whoever needs that backup. Errors printed. */
int repo2_open(const char *url, enum store_lock_mode mode, const struct repo2_create *create,
	       const char *key_file, struct repo2 **out);
void repo2_close(struct repo2 *r);

/* What the repository at URL is: 1, 2, 0 if it does not exist (no
 * repo.json), or a negative errno (printed). */
int repo_version(const char *url);

/* Backup NUM, or NULL (printed) if it does not exist or is unusable. */
const struct repo2_backup *repo2_backup(struct repo2 *r, unsigned num);
/* The last usable backup of DEVICE (any device if NULL), or NULL. */
const struct repo2_backup *repo2_last(struct repo2 *r, const char *device);

/* The block map of backup B: B->blocks ids (all zero: a zero block), checked
 * (name, authentication, header against the manifest). Errors printed or,
 * with WHY, allocated for the caller. */
int repo2_read_map(struct repo2 *r, const struct repo2_backup *b, struct seal_ctx *sc, char **why,
		   uint8_t (**map)[CHUNK_ID_LEN]);
bool repo2_zero_id(const uint8_t id[CHUNK_ID_LEN]);

/* Read every index object into r->chunks. -EBADMSG (printed) if one is
 * damaged: with STRICT the load fails, else its chunks are missing. */
int repo2_load_chunks(struct repo2 *r, struct seal_ctx *sc, bool strict);
/* Where chunk ID is: 0, or -ENOENT. */
int repo2_find_chunk(struct repo2 *r, const uint8_t id[CHUNK_ID_LEN], struct chunk_loc *loc);
/* Claim ID for the caller to store: true if nobody has it (it is now
 * pending), false if it is stored or pending already. */
bool repo2_claim_chunk(struct repo2 *r, const uint8_t id[CHUNK_ID_LEN]);
/* The pack's object key ("packs/3f/3f8a...") into KEY (80 bytes). */
void repo2_pack_key(struct repo2 *r, uint32_t pack, char key[80]);

/* Read chunk ID (RAW_LEN bytes expected) into OUT, checked (DEEP: its id
 * recomputed too, see seal_open_chunk). -EBADMSG, -ENOENT or -EIO with *WHY
 * allocated. */
int repo2_read_chunk(struct repo2 *r, struct seal_ctx *sc, const uint8_t id[CHUNK_ID_LEN], void *out,
		     size_t raw_len, bool deep, char **why);

/* Blocks FIRST to FIRST + COUNT of an image of SIZE bytes whose map is MAP,
 * into OUT (COUNT blocks' room), every chunk checked; chunks stored next to
 * each other in one pack are fetched together. Errors as repo2_read_chunk's,
 * naming the block. */
int repo2_read_blocks(struct repo2 *r, struct seal_ctx *sc, const uint8_t (*map)[CHUNK_ID_LEN], uint64_t size,
		      uint64_t first, uint64_t count, char *out, char **why);

/* Writing: packs, then the index object of the new chunks, then the map,
 * then the manifest. Full packs are stored by PACK_UPLOADERS threads while
 * the next one fills; at most PACK_QUEUE wait for them. */
#define PACK_UPLOADERS 3
#define PACK_QUEUE 2
#define PACK_BUFFERS (PACK_UPLOADERS + PACK_QUEUE)
struct pack_upload {
	char *buf;
	size_t len;
	uint32_t pack;
};
struct pack_writer {
	struct repo2 *r;
	char *buf; /* the pack being filled */
	size_t len, cap;
	pthread_t up[PACK_UPLOADERS];
	unsigned n_up;
	bool started, stopping;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pack_upload queue[PACK_QUEUE];
	size_t q_head, q_len;
	unsigned busy;
	int err; /* the first upload that failed */
	char *free_bufs[PACK_BUFFERS];
	unsigned n_free;
	/* The chunks in BUF, and every chunk stored by this writer. */
	struct new_chunk {
		uint8_t id[CHUNK_ID_LEN];
		struct chunk_loc loc;
	} *added;
	size_t n_added, cap_added, first_in_buf;
	uint64_t stored_bytes, raw_bytes;
};
int pack_writer_init(struct pack_writer *w, struct repo2 *r);
/* Append a sealed chunk; stores the pack when it is full. */
int pack_writer_add(struct pack_writer *w, const uint8_t id[CHUNK_ID_LEN], const void *sealed, size_t len,
		    uint32_t raw_len);
/* Store what is buffered and the index object of every chunk added; *INDEX
 * gets its key (NULL if none was added). */
int pack_writer_finish(struct pack_writer *w, struct seal_ctx *sc, char **index);
void pack_writer_free(struct pack_writer *w);

/* Store an index object listing the N chunks of V (their packs stored);
 * *INDEX gets its key. */
int repo2_write_index(struct repo2 *r, struct seal_ctx *sc, const struct new_chunk *v, size_t n, char **index);

/* Store MAP (B->blocks ids) as B's map, then B's manifest (B->num is set to
 * the next number): the backup exists from then on. */
int repo2_commit(struct repo2 *r, struct seal_ctx *sc, struct repo2_backup *b, const uint8_t (*map)[CHUNK_ID_LEN]);

/* The manifest key of backup NUM. */
void repo2_manifest_key(unsigned num, char key[40]);
/* Read the manifests again (after a prune removed some). */
int repo2_reload(struct repo2 *r);
/* Remove backup NUM's manifest (prune); its objects stay until gc. */
int repo2_forget(struct repo2 *r, unsigned num);

/* Every entry of every index object (gc sees duplicates the table hides):
 * FN gets each with its pack's number in r->packs. Errors printed. */
int repo2_each_index_entry(struct repo2 *r, struct seal_ctx *sc,
			   void (*fn)(void *opaque, const uint8_t id[CHUNK_ID_LEN], const struct chunk_loc *loc),
			   void *opaque);

/* For the unit tests and the fuzzer: the parsers on bytes already read. */
int repo2_parse_repo_json(const char *text, struct repo2 *r, struct json_object **encryption, int *level);
void repo2_parse_manifest(struct repo2_backup *b, const char *text, const char *name);
int repo2_parse_index(const void *buf, size_t len, void (*fn)(void *opaque, const uint8_t id[CHUNK_ID_LEN],
								   const uint8_t pack[32], const struct chunk_loc *loc),
		      void *opaque);
void repo2_backup_clear(struct repo2_backup *b);

/* Crash points for the tests (docs/testing.md): with BDFILTER_BACKUP_CRASH
 * set to NAME, the process kills itself with SIGKILL there. */
void repo2_crash_point(const char *name);

#endif
