/* restore: the image as it was at backup N, rebuilt from N's chain (the
 * newest copy of each block from N back to the full backup it rests on; a
 * block no backup holds is zero), every block checked against its checksum
 * before it is written to a file, a block device or an NBD export. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "backup/backup.h"
#include "backup/block_list.h"
#include "backup/progress.h"
#include "backup/repo.h"
#include "backup/repo2.h"
#include "backup/source.h"
#include "backup/util.h"
#include "common/io.h"

#define RUN_BYTES (4u << 20)

/* Where the image goes. */
struct target {
	const char *name;
	int fd;              /* a file or block device, or -1 */
	int directfd;        /* the same with O_DIRECT, or < 0 */
	bool sparse;         /* a new regular file: zeros need no write */
	struct nbd_handle *h; /* or an NBD export */
};

static bool is_nbd_uri(const char *s)
{
	return strncmp(s, "nbd://", 6) == 0 || strncmp(s, "nbd+unix://", 11) == 0 ||
	       strncmp(s, "nbds://", 7) == 0 || strncmp(s, "nbds+unix://", 12) == 0 ||
	       strncmp(s, "nbd+vsock://", 12) == 0;
}

static int target_open(struct target *t, const char *to, const struct source_tls *tls, uint64_t size)
{
	struct stat st;

	*t = (struct target){ .name = to, .fd = -1, .directfd = -1 };
	if (is_nbd_uri(to)) {
		int64_t have;

		if (!(t->h = nbd_create())) {
			bk_error("%s", nbd_get_error());
			return -ENOMEM;
		}
		if (source_connect_uri(t->h, to, tls) < 0)
			return -EIO;
		if (nbd_is_read_only(t->h) == 1) {
			bk_error("%s is read-only", to);
			return -EROFS;
		}
		have = nbd_get_size(t->h);
		if (have < 0 || (uint64_t)have < size) {
			bk_error("%s is too small: %" PRId64 " bytes, the image is %" PRIu64, to, have, size);
			return -ENOSPC;
		}
		return 0;
	}
	t->fd = open(to, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (t->fd < 0 || fstat(t->fd, &st) < 0) {
		int e = -errno;

		bk_error("%s: %s", to, strerror(-e));
		return e;
	}
	if (S_ISBLK(st.st_mode)) {
		uint64_t have = 0;

		if (ioctl(t->fd, BLKGETSIZE64, &have) < 0) {
			int e = -errno;

			bk_error("%s: %s", to, strerror(-e));
			return e;
		}
		if (have < size) {
			bk_error("%s is too small: %" PRIu64 " bytes, the image is %" PRIu64, to, have, size);
			return -ENOSPC;
		}
		t->directfd = io_reopen_direct(t->fd);
		return 0;
	}
	if (!S_ISREG(st.st_mode)) {
		bk_error("%s: not a regular file, a block device or an NBD URI", to);
		return -EINVAL;
	}
	/* A regular file becomes the image, sparse where it is zero. */
	if (ftruncate(t->fd, 0) < 0 || ftruncate(t->fd, (off_t)size) < 0) {
		int e = -errno;

		bk_error("%s: %s", to, strerror(-e));
		return e;
	}
	t->sparse = true;
	t->directfd = io_reopen_direct(t->fd);
	return 0;
}

/* Large aligned pieces go around the page cache, as the backup's data file
 * does: restoring an image should not push the machine's working set out,
 * and the copy into the cache is the largest cost of a restore. */
static int target_write(struct target *t, const void *buf, size_t len, uint64_t off)
{
	int r;

	if (t->h) {
		if (nbd_pwrite(t->h, buf, len, off, 0) < 0) {
			bk_error("%s: writing at %" PRIu64 ": %s", t->name, off, nbd_get_error());
			return -EIO;
		}
		return 0;
	}
	r = io_pwrite_direct(t->fd, t->directfd, buf, len, off);
	if (r < 0)
		bk_error("%s: writing at %" PRIu64 ": %s", t->name, off, strerror(-r));
	return r;
}

static int target_zero(struct target *t, uint64_t off, uint64_t len, char *zeros)
{
	if (t->sparse)
		return 0;
	if (t->h && nbd_can_zero(t->h) == 1) {
		while (len > 0) {
			uint64_t n = len < (1u << 30) ? len : (1u << 30);

			if (nbd_zero(t->h, n, off, 0) < 0) {
				bk_error("%s: zeroing at %" PRIu64 ": %s", t->name, off, nbd_get_error());
				return -EIO;
			}
			off += n;
			len -= n;
		}
		return 0;
	}
	if (t->fd >= 0 && fallocate(t->fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len) == 0)
		return 0;
	while (len > 0) {
		size_t n = len < RUN_BYTES ? (size_t)len : RUN_BYTES;
		int r = target_write(t, zeros, n, off);

		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

static int target_close(struct target *t, bool flush)
{
	int r = 0;

	if (t->h) {
		if (flush && nbd_flush(t->h, 0) < 0) {
			bk_error("%s: flush: %s", t->name, nbd_get_error());
			r = -EIO;
		}
		nbd_shutdown(t->h, 0);
		nbd_close(t->h);
	} else if (t->fd >= 0) {
		if (t->directfd >= 0)
			close(t->directfd);
		if (flush && fsync(t->fd) < 0) {
			r = -errno;
			bk_error("%s: fsync: %s", t->name, strerror(-r));
		}
		close(t->fd);
	}
	t->h = NULL;
	t->fd = -1;
	return r;
}

/* The backups a restore reads, oldest (the full) first. */
struct chain {
	unsigned n;
	unsigned *num;
	struct repo_entry **e;
	uint64_t *ne;
	int *fd;
};

static struct chain *chain_new(unsigned max)
{
	struct chain *ch = calloc(1, sizeof(*ch));

	if (!ch)
		return NULL;
	ch->num = calloc(max, sizeof(*ch->num));
	ch->e = calloc(max, sizeof(*ch->e));
	ch->ne = calloc(max, sizeof(*ch->ne));
	ch->fd = malloc(max * sizeof(*ch->fd));
	if (!ch->num || !ch->e || !ch->ne || !ch->fd) {
		free(ch->num);
		free(ch->e);
		free(ch->ne);
		free(ch->fd);
		free(ch);
		return NULL;
	}
	for (unsigned i = 0; i < max; i++)
		ch->fd[i] = -1;
	return ch;
}

static void chain_free(struct chain *ch)
{
	if (!ch)
		return;
	for (unsigned i = 0; i < ch->n; i++) {
		free(ch->e[i]);
		if (ch->fd[i] >= 0)
			close(ch->fd[i]);
	}
	free(ch->num);
	free(ch->e);
	free(ch->ne);
	free(ch->fd);
	free(ch);
}

static int restore1_run(const struct restore_opts *o, struct json_object **result)
{
	struct repo *r = NULL;
	struct chain *ch = NULL;
	struct target t = { .fd = -1 };
	uint32_t *src = NULL; /* per block: chain position + 1, 0 for zero */
	uint64_t *off = NULL, nblocks, written = 0, size;
	struct progress *pg = NULL;
	char *buf = NULL, *zeros = NULL;
	double t0 = bk_seconds();
	unsigned at;
	int err;

	if ((err = repo_open(o->repo, REPO_READ, 0, &r)) < 0)
		return err;
	if (r->n == 0) {
		bk_error("repository %s holds no backup", o->repo);
		err = -ENOENT;
		goto out;
	}
	if (o->at >= (int64_t)r->n) {
		bk_error("no backup %" PRId64 ": the repository holds 0 to %u", o->at, r->n - 1);
		err = -ENOENT;
		goto out;
	}
	at = o->at < 0 ? r->n - 1 : (unsigned)o->at;
	if (!(ch = chain_new(r->n))) {
		err = -ENOMEM;
		goto nomem;
	}
	/* The chain, from the full backup AT rests on up to AT. */
	if ((err = repo_chain(r, at, ch->num)) < 0)
		goto out;
	ch->n = (unsigned)err;
	size = r->b[at].size;
	nblocks = block_count(size, r->block_size);
	src = calloc(nblocks ? nblocks : 1, sizeof(*src));
	off = calloc(nblocks ? nblocks : 1, sizeof(*off));
	buf = io_alloc_aligned(RUN_BYTES > r->block_size ? RUN_BYTES : r->block_size);
	zeros = calloc(1, RUN_BYTES);
	if (!src || !off || !buf || !zeros) {
		err = -ENOMEM;
		goto nomem;
	}
	for (unsigned i = 0; i < ch->n; i++) {
		if ((err = repo_read_index(r, ch->num[i], NULL, &ch->e[i], &ch->ne[i])) < 0)
			goto out;
		if ((ch->fd[i] = repo_open_data(r, ch->num[i], NULL)) < 0) {
			err = ch->fd[i];
			goto out;
		}
		for (uint64_t j = 0; j < ch->ne[i]; j++) {
			const struct repo_entry *e = &ch->e[i][j];

			src[e->block] = e->offset == REPO_ZERO_BLOCK ? 0 : i + 1;
			off[e->block] = j; /* the entry, for its offset and checksum */
		}
	}

	if ((err = target_open(&t, o->to, o->tls, size)) < 0)
		goto out;
	pg = progress_new(o->show_progress, "restore", size);
	for (uint64_t blk = 0; blk < nblocks;) {
		uint64_t end = blk + 1, start = blk * r->block_size;

		if (src[blk] == 0) {
			while (end < nblocks && src[end] == 0)
				end++;
			err = target_zero(&t, start, (end < nblocks ? end * r->block_size : size) - start, zeros);
		} else {
			unsigned c = src[blk] - 1;
			const struct repo_entry *first = &ch->e[c][off[blk]];
			size_t len = block_length(blk, size, r->block_size);
			ssize_t got;

			/* Blocks that follow each other in the image and in one data file
			 * are read and written together. */
			while (end < nblocks && src[end] == src[blk] &&
			       ch->e[c][off[end]].offset == first->offset + len && len + r->block_size <= RUN_BYTES) {
				len += block_length(end, size, r->block_size);
				end++;
			}
			got = io_pread_all(ch->fd[c], buf, len, first->offset);
			if (got != (ssize_t)len) {
				bk_error("backup %u: data: %s at offset %" PRIu64, ch->num[c],
					 got < 0 ? strerror((int)-got) : "short read", first->offset);
				err = -EIO;
				goto out;
			}
			for (uint64_t k = blk; k < end; k++) {
				const struct repo_entry *e = &ch->e[c][off[k]];
				uint8_t h[REPO_HASH_LEN];

				repo_hash(buf + (e->offset - first->offset), block_length(k, size, r->block_size), h);
				if (memcmp(h, e->hash, REPO_HASH_LEN)) {
					bk_error("backup %u: block %" PRIu64 " does not match its checksum (damaged data); "
						 "nothing more is written to %s",
						 ch->num[c], k, o->to);
					err = -EIO;
					goto out;
				}
			}
			err = target_write(&t, buf, len, start);
			written += len;
		}
		if (err < 0)
			goto out;
		progress_update(pg, end < nblocks ? end * r->block_size : size);
		blk = end;
	}
	if ((err = target_close(&t, true)) < 0)
		goto out;
	progress_done(pg);
	pg = NULL;
	*result = json_object_new_object();
	json_object_object_add(*result, "at", json_object_new_int64(at));
	json_object_object_add(*result, "to", json_object_new_string(o->to));
	json_object_object_add(*result, "size", json_object_new_int64((int64_t)size));
	json_object_object_add(*result, "bytes_written", json_object_new_int64((int64_t)written));
	json_object_object_add(*result, "seconds", json_object_new_double(bk_seconds() - t0));
	goto out;
nomem:
	bk_error("out of memory");
out:
	progress_done(pg);
	target_close(&t, false);
	chain_free(ch);
	free(src);
	free(off);
	free(buf);
	free(zeros);
	repo_close(r);
	return err;
}

/* Version 2: every backup's map is complete, so a restore reads one map and
 * no chain. WRITERS threads each take the next run of blocks, fetch and
 * check its chunks and write them. */
#define RUN2_BLOCKS_BYTES (8u << 20)

struct restore2 {
	struct repo2 *r;
	const struct repo2_backup *b;
	const uint8_t (*map)[CHUNK_ID_LEN];
	struct target *t;
	const char *to;
	char *zeros;
	uint64_t nblocks, per_run;
	atomic_uint_fast64_t next, done, written;
	atomic_int err;
};

static void *restore2_writer(void *opaque)
{
	struct restore2 *rs = opaque;
	uint32_t bs = rs->r->block_size;
	struct seal_ctx *sc = NULL;
	char *buf = io_alloc_aligned(rs->per_run * bs);
	int e = 0;

	if (!buf || seal_ctx_new(rs->r->seal, &sc) < 0) {
		e = -ENOMEM;
		goto out;
	}
	while (atomic_load(&rs->err) == 0) {
		uint64_t first = atomic_fetch_add(&rs->next, rs->per_run), end;

		if (first >= rs->nblocks)
			break;
		end = first + rs->per_run < rs->nblocks ? first + rs->per_run : rs->nblocks;
		for (uint64_t b = first; b < end && e == 0;) {
			uint64_t g = b + 1, off = b * bs, len;
			bool zero = repo2_zero_id(rs->map[b]);

			while (g < end && repo2_zero_id(rs->map[g]) == zero)
				g++;
			len = (g < rs->nblocks ? g * bs : rs->b->size) - off;
			if (zero) {
				e = target_zero(rs->t, off, len, rs->zeros);
			} else {
				char *why = NULL;

				e = repo2_read_blocks(rs->r, sc, rs->map, rs->b->size, b, g - b, buf, &why);
				if (e < 0) {
					bk_error("backup %u: %s; nothing more is written to %s", rs->b->num,
						 why ? why : strerror(-e), rs->to);
					free(why);
				} else {
					e = target_write(rs->t, buf, len, off);
					atomic_fetch_add(&rs->written, len);
				}
			}
			b = g;
		}
		atomic_fetch_add(&rs->done, end - first);
		if (e < 0)
			break;
	}
out:
	if (e < 0) {
		int zero = 0;

		if (e == -ENOMEM)
			bk_error("out of memory");
		atomic_compare_exchange_strong(&rs->err, &zero, e);
	}
	seal_ctx_free(sc);
	free(buf);
	return NULL;
}

static int restore2_run(const struct restore_opts *o, struct json_object **result)
{
	struct restore2 rs = { 0 };
	struct repo2 *r = NULL;
	struct seal_ctx *sc = NULL;
	uint8_t(*map)[CHUNK_ID_LEN] = NULL;
	struct target t = { .fd = -1 };
	struct progress *pg = NULL;
	pthread_t th[16];
	unsigned writers = o->writers ? o->writers : 4, started = 0;
	double t0 = bk_seconds();
	const struct repo2_backup *b;
	int err;

	if ((err = repo2_open(o->repo, STORE_LOCK_READ, NULL, o->key_file, &r)) < 0)
		return err;
	if (o->at < 0) {
		if (!(b = repo2_last(r, o->device))) {
			bk_error("repository %s holds no usable backup%s%s", o->repo, o->device ? " of " : "",
				 o->device ? o->device : "");
			err = -ENOENT;
			goto out;
		}
	} else if (!(b = repo2_backup(r, (unsigned)o->at))) {
		err = -ENOENT;
		goto out;
	}
	if ((err = seal_ctx_new(r->seal, &sc)) < 0 || (err = repo2_load_chunks(r, sc, false)) < 0 ||
	    (err = repo2_read_map(r, b, sc, NULL, &map)) < 0)
		goto out;
	if ((err = target_open(&t, o->to, o->tls, b->size)) < 0)
		goto out;
	rs = (struct restore2){ .r = r, .b = b, .map = (const uint8_t(*)[CHUNK_ID_LEN])map, .t = &t, .to = o->to,
				.nblocks = b->blocks };
	rs.per_run = RUN2_BLOCKS_BYTES / r->block_size ? RUN2_BLOCKS_BYTES / r->block_size : 1;
	if (!(rs.zeros = calloc(1, RUN_BYTES))) {
		err = -ENOMEM;
		bk_error("out of memory");
		goto out;
	}
	if (writers > sizeof(th) / sizeof(th[0]))
		writers = sizeof(th) / sizeof(th[0]);
	pg = progress_new(o->show_progress, "restore", b->size);
	for (; started < writers; started++)
		if (pthread_create(&th[started], NULL, restore2_writer, &rs) != 0)
			break;
	if (started == 0) {
		bk_error("cannot start a thread");
		err = -EAGAIN;
		goto out;
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if ((err = atomic_load(&rs.err)) < 0)
		goto out;
	if ((err = target_close(&t, true)) < 0)
		goto out;
	progress_done(pg);
	pg = NULL;
	*result = json_object_new_object();
	json_object_object_add(*result, "at", json_object_new_int64(b->num));
	json_object_object_add(*result, "device", json_object_new_string(b->device));
	json_object_object_add(*result, "to", json_object_new_string(o->to));
	json_object_object_add(*result, "size", json_object_new_int64((int64_t)b->size));
	json_object_object_add(*result, "bytes_written", json_object_new_int64((int64_t)atomic_load(&rs.written)));
	json_object_object_add(*result, "writers", json_object_new_int64(started));
	json_object_object_add(*result, "seconds", json_object_new_double(bk_seconds() - t0));
out:
	progress_done(pg);
	target_close(&t, false);
	free(rs.zeros);
	free(map);
	seal_ctx_free(sc);
	repo2_close(r);
	return err;
}

int restore_run(const struct restore_opts *o, struct json_object **result)
{
	int v = repo_version(o->repo);

	if (v < 0)
		return v;
	if (v == 0) {
		bk_error("%s: not a bdfilter-backup repository", o->repo);
		return -ENOENT;
	}
	if (v == 1) {
		if (o->key_file) {
			bk_error("%s: a version 1 repository is not encrypted: no --key-file", o->repo);
			return -EINVAL;
		}
		if (o->device || o->writers) {
			bk_error("%s: a version 1 repository holds one device, restored by one writer: "
				 "no --device or --writers", o->repo);
			return -EINVAL;
		}
		return restore1_run(o, result);
	}
	return restore2_run(o, result);
}
