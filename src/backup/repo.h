/* The backup repository (docs/backup-repo.md): a directory with repo.json,
 * a lock file and one directory per backup (000000, 000001, ...) holding
 * manifest.json, index and data. A new backup is built under .tmp-NNNNNN and
 * made visible by rename(2) after everything in it is on stable storage, so
 * an interrupted run leaves the repository as it was. */
#ifndef BDF_BACKUP_REPO_H
#define BDF_BACKUP_REPO_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#define REPO_BLOCK_SIZE_DEFAULT 65536u
#define REPO_ZERO_BLOCK UINT64_MAX /* an index entry's offset for an all-zero block */
#define REPO_HASH_LEN 16           /* XXH3-128 */

struct repo_entry {
	uint64_t block;
	uint64_t offset; /* in the backup's data file, or REPO_ZERO_BLOCK */
	uint8_t hash[REPO_HASH_LEN];
};

struct backup_info {
	unsigned num;
	bool full;
	int parent; /* the backup this one is relative to; -1 for a full */
	char *from, *generation, *bitmap, *time; /* generation, bitmap: NULL if none */
	int64_t changes_number;                   /* -1 if none */
	uint64_t size;
	uint32_t block_size;
	uint64_t blocks, zero_blocks, bytes_stored, data_size;
	uint8_t index_hash[REPO_HASH_LEN];
	char *error; /* the manifest could not be used: why (the other fields are unset) */
};

struct repo {
	char *dir;
	int dirfd, lockfd;
	uint32_t block_size;
	struct backup_info *b;
	unsigned n;
};

enum repo_mode {
	REPO_READ,   /* shared lock; the repository must exist */
	REPO_WRITE,  /* exclusive lock; the repository must exist */
	REPO_CREATE, /* exclusive lock; made (with BLOCK_SIZE) if missing */
};

/* Open DIR, lock it, remove what an interrupted run left, and read the
 * manifests. A manifest that cannot be used does not fail the open: its
 * backup gets an error, reported by whoever needs it. Errors are printed. */
int repo_open(const char *dir, enum repo_mode mode, uint32_t block_size, struct repo **out);
void repo_close(struct repo *r);

/* Backup NUM, or NULL (printed) if it does not exist or is unusable. */
const struct backup_info *repo_backup(struct repo *r, unsigned num);

/* The chain rules (docs/backup-repo.md): backup 0 is full; a full has no
 * parent; an incremental's parent is the backup before it, usable, of the
 * same size and block size. A backup that breaks one is unusable: its
 * error says which. */

/* The backups restoring NUM reads, oldest (the full it rests on) first, into
 * OUT (room for NUM + 1); their count, or -EINVAL (printed) if NUM does not
 * exist or is unusable. */
int repo_chain(struct repo *r, unsigned num, unsigned *out);

/* The index of backup NUM (a usable one), checked against its manifest
 * (checksum, entry count, entries in order, inside the image and the data
 * file). Errors are negative errno, their message printed, or, with WHY,
 * allocated into *WHY for the caller. */
int repo_read_index(struct repo *r, unsigned num, char **why, struct repo_entry **out, uint64_t *n);
/* The data file of backup NUM, open for reading, its size checked; errors as
 * repo_read_index's. */
int repo_open_data(struct repo *r, unsigned num, char **why);

/* Building a new backup. */
struct backup_writer {
	struct repo *r;
	unsigned num;
	char tmpname[32];
	int tmpfd;  /* the temporary directory */
	int datafd; /* its data file */
};
int repo_backup_begin(struct repo *r, struct backup_writer *w);
/* Write the index and the manifest (INFO's num, sizes and hash are filled
 * in), sync, and rename into place. On failure the backup is not there. */
int repo_backup_commit(struct backup_writer *w, struct backup_info *info, const struct repo_entry *e,
		       uint64_t n);
void repo_backup_abort(struct backup_writer *w);

/* The parsers behind repo_open and repo_read_index, on bytes already read
 * (for the unit tests and the fuzzer). NAME names the file in messages. A bad
 * manifest, or one that breaks a chain rule it shows alone, sets B->error. */
/* repo.json: 0 and its block size, or -EINVAL if it is not one of ours. */
int repo_parse_repo_json(const char *text, uint32_t *block_size);
void repo_parse_manifest(uint32_t block_size, struct backup_info *b, const char *text, const char *name);
/* The rules between the N manifests of B (B[i].num == i), parsed; run once
 * they all are. Sets the error of each backup that breaks one. */
void repo_check_chain(struct backup_info *b, unsigned n);
int repo_parse_index(const struct backup_info *b, const char *buf, size_t len, const char *name, char **why,
		     struct repo_entry **out, uint64_t *n);

void repo_hash(const void *buf, size_t len, uint8_t out[REPO_HASH_LEN]);
void repo_hash_hex(const uint8_t h[REPO_HASH_LEN], char out[2 * REPO_HASH_LEN + 1]);

#endif
