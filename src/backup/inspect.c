/* verify and list: what the repository holds, and whether every block of it
 * still matches the checksum it was stored with. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/block_list.h"
#include "backup/repo.h"
#include "backup/repo2.h"
#include "backup/util.h"
#include "common/io.h"

/* Per backup, the checksum errors listed before "and N more". */
#define ERRORS_PER_BACKUP 10

static void add_error(struct json_object *errors, char *msg)
{
	json_object_array_add(errors, json_object_new_string(msg ? msg : "out of memory"));
	free(msg);
}

/* Check every block of backup NUM; the number of blocks checked. */
static uint64_t verify_backup(struct repo *r, unsigned num, char *buf, const char *zeros,
			      struct json_object *errors)
{
	const struct backup_info *b = &r->b[num];
	struct repo_entry *e = NULL;
	uint64_t n = 0, bad = 0;
	char *why = NULL;
	int fd;

	if (repo_read_index(r, num, &why, &e, &n) < 0) {
		add_error(errors, why);
		return 0;
	}
	if ((fd = repo_open_data(r, num, &why)) < 0) {
		add_error(errors, why);
		free(e);
		return 0;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint32_t len = block_length(e[i].block, b->size, b->block_size);
		uint8_t h[REPO_HASH_LEN];
		const char *data = zeros;

		if (e[i].offset != REPO_ZERO_BLOCK) {
			if (io_pread_all(fd, buf, len, e[i].offset) != (ssize_t)len) {
				add_error(errors, bk_format("backup %u: block %" PRIu64 ": cannot read its data", num,
						      e[i].block));
				bad++;
				continue;
			}
			data = buf;
		}
		repo_hash(data, len, h);
		if (memcmp(h, e[i].hash, REPO_HASH_LEN) == 0)
			continue;
		if (++bad <= ERRORS_PER_BACKUP)
			add_error(errors, bk_format("backup %u: block %" PRIu64 " (data offset %" PRIu64
					      "): checksum mismatch",
					      num, e[i].block, e[i].offset == REPO_ZERO_BLOCK ? 0 : e[i].offset));
	}
	if (bad > ERRORS_PER_BACKUP)
		add_error(errors, bk_format("backup %u: and %" PRIu64 " more blocks that do not match", num,
				      bad - ERRORS_PER_BACKUP));
	close(fd);
	free(e);
	return n;
}

static int verify1_run(const char *repo, struct json_object **result)
{
	struct repo *r;
	struct json_object *errors;
	char *buf, *zeros;
	bool *broken;
	uint64_t blocks = 0;
	int err;

	if ((err = repo_open(repo, REPO_READ, 0, &r)) < 0)
		return err;
	buf = malloc(r->block_size);
	zeros = calloc(1, r->block_size);
	broken = calloc(r->n ? r->n : 1, sizeof(*broken));
	if (!buf || !zeros || !broken) {
		bk_error("out of memory");
		err = -ENOMEM;
		goto out;
	}
	errors = json_object_new_array();
	for (unsigned k = 0; k < r->n; k++) {
		size_t before = json_object_array_length(errors);

		if (r->b[k].error) {
			add_error(errors, strdup(r->b[k].error));
			broken[k] = true;
			continue;
		}
		/* (a usable incremental's parent is an earlier backup: repo_check_chain) */
		if (!r->b[k].full && broken[r->b[k].parent])
			add_error(errors, bk_format("backup %u: rests on backup %d, which is damaged", k, r->b[k].parent));
		blocks += verify_backup(r, k, buf, zeros, errors);
		broken[k] = json_object_array_length(errors) != before;
	}
	*result = json_object_new_object();
	json_object_object_add(*result, "repo", json_object_new_string(repo));
	json_object_object_add(*result, "backups", json_object_new_int64(r->n));
	json_object_object_add(*result, "blocks", json_object_new_int64((int64_t)blocks));
	json_object_object_add(*result, "ok", json_object_new_boolean(json_object_array_length(errors) == 0));
	json_object_object_add(*result, "errors", errors);
	err = json_object_array_length(errors) == 0 ? 0 : 1;
out:
	free(buf);
	free(zeros);
	free(broken);
	repo_close(r);
	return err;
}

static int list1_run(const char *repo, struct json_object **result)
{
	struct repo *r;
	struct json_object *list;
	int err = 0;

	if ((err = repo_open(repo, REPO_READ, 0, &r)) < 0)
		return err;
	list = json_object_new_array();
	for (unsigned k = 0; k < r->n; k++) {
		const struct backup_info *b = &r->b[k];
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "backup", json_object_new_int64(k));
		if (b->error) {
			bk_error("%s", b->error);
			json_object_object_add(o, "error", json_object_new_string(b->error));
			json_object_array_add(list, o);
			err = 1;
			continue;
		}
		json_object_object_add(o, "kind", json_object_new_string(b->full ? "full" : "incremental"));
		json_object_object_add(o, "parent", b->full ? NULL : json_object_new_int64(b->parent));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)b->size));
		json_object_object_add(o, "generation", b->generation ? json_object_new_string(b->generation) : NULL);
		json_object_object_add(o, "changes_number",
				       b->changes_number >= 0 ? json_object_new_int64(b->changes_number) : NULL);
		json_object_object_add(o, "bitmap", b->bitmap ? json_object_new_string(b->bitmap) : NULL);
		json_object_object_add(o, "blocks", json_object_new_int64((int64_t)b->blocks));
		json_object_object_add(o, "zero_blocks", json_object_new_int64((int64_t)b->zero_blocks));
		json_object_object_add(o, "bytes_stored", json_object_new_int64((int64_t)b->bytes_stored));
		json_object_object_add(o, "time", json_object_new_string(b->time));
		json_object_object_add(o, "from", json_object_new_string(b->from));
		json_object_array_add(list, o);
	}
	*result = json_object_new_object();
	json_object_object_add(*result, "repo", json_object_new_string(repo));
	json_object_object_add(*result, "block_size", json_object_new_int64(r->block_size));
	json_object_object_add(*result, "backups", list);
	repo_close(r);
	return err;
}

/* Which version's reader: 1 or 2, or a negative errno (printed). */
static int version_of(const char *repo, const char *key_file)
{
	int v = repo_version(repo);

	if (v == 0) {
		bk_error("%s: not a bdfilter-backup repository", repo);
		return -ENOENT;
	}
	if (v == 1 && key_file) {
		bk_error("%s: a version 1 repository is not encrypted: no --key-file", repo);
		return -EINVAL;
	}
	return v;
}

int verify_run(const char *repo, const char *key_file, bool deep, struct json_object **result)
{
	int v = version_of(repo, key_file);

	if (v < 0)
		return v;
	/* Version 1 keeps no chunk ids: its verify always reads every block. */
	return v == 1 ? verify1_run(repo, result) : verify2_run(repo, key_file, deep, result);
}

int list_run(const char *repo, const char *key_file, struct json_object **result)
{
	int v = version_of(repo, key_file);

	if (v < 0)
		return v;
	return v == 1 ? list1_run(repo, result) : list2_run(repo, key_file, result);
}

int info_run(const char *repo, const char *key_file, struct json_object **result)
{
	int v = version_of(repo, key_file);

	if (v < 0)
		return v;
	if (v == 1) {
		bk_error("%s: info is for version 2 repositories (list shows a version 1 one)", repo);
		return -EINVAL;
	}
	return info2_run(repo, key_file, result);
}
