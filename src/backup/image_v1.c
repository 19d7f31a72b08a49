/* Restore points of version 1 repositories (image_internal.h,
 * docs/backup-repo.md): the image at backup N is, for each block, the entry
 * of the newest backup from N back to the full backup it rests on that lists
 * it, and zero if none does: what restore.c rebuilds.
 *
 * The open merges the chain's indexes into one table, sorted by block, of the
 * blocks that hold data (a zero entry, or no entry, is a gap: it reads as
 * zeros and is a hole in the extents), and keeps each backup's data file
 * open. A read looks its first block up, preads runs of whole blocks straight
 * into the caller's buffer (pread only: no file offset is shared between
 * threads) and checks each block's XXH3-128 before the read succeeds; a block
 * the request only cuts is read whole, checked, and kept in a small cache of
 * the last such blocks (small reads of one block come in series). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/block_list.h"
#include "backup/image_internal.h"
#include "backup/repo.h"
#include "backup/util.h"
#include "common/io.h"

#define RUN_MAX (8u << 20)     /* the most one pread reads */
#define CACHE_BYTES (4u << 20) /* the cache of cut blocks: this much, */
#define CACHE_SLOTS 16u        /* in at most this many blocks, at least one */
#define REPORTED_MAX 64u       /* damaged blocks said once each, this many */

struct v1_block {
	uint64_t block;
	uint64_t offset; /* in its backup's data file */
	uint8_t hash[REPO_HASH_LEN];
	uint32_t level; /* its backup's place in the chain (num[], fd[]) */
};

struct v1_slot {
	uint64_t block; /* UINT64_MAX: empty */
	uint64_t used;  /* when last hit, for LRU */
	char *buf;
};

struct image_v1 {
	struct image im;
	struct repo *r; /* open: its read lock is held */
	unsigned nlevels;
	unsigned *num; /* the chain's backups, oldest (the full) first */
	int *fd;       /* their data files */
	struct v1_block *b;
	uint64_t n;

	pthread_mutex_t lock; /* the cache and the damaged blocks said */
	struct v1_slot slot[CACHE_SLOTS];
	unsigned nslots;
	uint64_t clock;
	uint64_t reported[REPORTED_MAX];
	unsigned nreported;
};

/* The first entry for BLOCK or a later one. */
static uint64_t find(const struct image_v1 *v, uint64_t block)
{
	uint64_t lo = 0, hi = v->n;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (v->b[mid].block < block)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint32_t blen(const struct image_v1 *v, uint64_t block)
{
	return block_length(block, v->im.size, v->im.block_size);
}

/* A damaged block is said once (a client or the kernel may retry it many
 * times), the first REPORTED_MAX of them; past those, every time. */
static void report_damage(struct image_v1 *v, const struct v1_block *e)
{
	uint64_t start = e->block * v->im.block_size;
	bool said = false;

	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < v->nreported && !said; i++)
		said = v->reported[i] == e->block;
	if (!said && v->nreported < REPORTED_MAX)
		v->reported[v->nreported++] = e->block;
	pthread_mutex_unlock(&v->lock);
	if (!said)
		bk_error("backup %u: block %" PRIu64 " (bytes %" PRIu64 " to %" PRIu64 " of the image) does not "
			 "match its checksum (damaged data): its reads fail with EIO",
			 v->num[e->level], e->block, start, start + blen(v, e->block) - 1);
}

/* COUNT blocks from E on, one after the other in the image and in one data
 * file (LEN bytes in all), into DST, each checked. */
static int read_blocks(struct image_v1 *v, const struct v1_block *e, uint64_t count, char *dst, size_t len)
{
	ssize_t got = io_pread_all(v->fd[e->level], dst, len, e->offset);

	if (got != (ssize_t)len) {
		bk_error("backup %u: data: %s at offset %" PRIu64 " (block %" PRIu64 " of the image)",
			 v->num[e->level], got < 0 ? strerror((int)-got) : "short read", e->offset, e->block);
		return -EIO;
	}
	for (uint64_t k = 0; k < count; k++) {
		uint32_t l = blen(v, e[k].block);
		uint8_t h[REPO_HASH_LEN];

		repo_hash(dst, l, h);
		if (memcmp(h, e[k].hash, REPO_HASH_LEN)) {
			report_damage(v, &e[k]);
			return -EIO;
		}
		dst += l;
	}
	return 0;
}

/* N bytes from LO of the block of E, which the request only cuts: from the
 * cache, or read whole, checked, and cached. */
static int read_cut(struct image_v1 *v, const struct v1_block *e, char *dst, uint32_t lo, uint32_t n)
{
	struct v1_slot *victim = NULL;
	char *buf, *old = NULL;
	int r;

	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < v->nslots; i++)
		if (v->slot[i].block == e->block) {
			memcpy(dst, v->slot[i].buf + lo, n);
			v->slot[i].used = ++v->clock;
			pthread_mutex_unlock(&v->lock);
			return 0;
		}
	pthread_mutex_unlock(&v->lock);

	buf = malloc(v->im.block_size);
	if (!buf) {
		bk_error("out of memory");
		return -ENOMEM;
	}
	r = read_blocks(v, e, 1, buf, blen(v, e->block));
	if (r < 0) {
		free(buf);
		return r;
	}
	memcpy(dst, buf + lo, n);

	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < v->nslots; i++) {
		if (v->slot[i].block == e->block) { /* another reader cached it meanwhile */
			victim = NULL;
			old = buf;
			break;
		}
		if (!victim || v->slot[i].used < victim->used)
			victim = &v->slot[i];
	}
	if (victim) {
		old = victim->buf;
		victim->buf = buf;
		victim->block = e->block;
		victim->used = ++v->clock;
	}
	pthread_mutex_unlock(&v->lock);
	free(old);
	return 0;
}

static int v1_read(struct image *im, void *buf, size_t len, uint64_t offset)
{
	struct image_v1 *v = (struct image_v1 *)im;
	uint32_t bs = im->block_size;
	uint64_t pos = offset, end = offset + len, blk = offset / bs, i = find(v, blk);
	char *dst = buf;
	int r;

	while (pos < end) {
		uint64_t start = blk * bs, lo = pos - start, hi = end - start;
		uint32_t l = blen(v, blk);

		if (hi > l)
			hi = l;
		if (i >= v->n || v->b[i].block != blk) {
			/* Zeros up to the next block that holds data. */
			uint64_t zend = i < v->n ? v->b[i].block * bs : im->size;

			if (zend > end)
				zend = end;
			memset(dst, 0, zend - pos);
			dst += zend - pos;
			pos = zend;
		} else if (lo == 0 && hi == l) {
			/* Whole blocks: as many as follow each other in the image
			 * and in one data file, in one pread. */
			uint64_t j = i + 1, run = l;

			while (j < v->n && v->b[j].block == v->b[j - 1].block + 1 && v->b[j].level == v->b[i].level &&
			       v->b[j].offset == v->b[i].offset + run) {
				uint32_t lj = blen(v, v->b[j].block);

				if (pos + run + lj > end || run + lj > RUN_MAX)
					break;
				run += lj;
				j++;
			}
			r = read_blocks(v, &v->b[i], j - i, dst, run);
			if (r < 0)
				return r;
			dst += run;
			pos += run;
			i = j;
		} else {
			r = read_cut(v, &v->b[i], dst, (uint32_t)lo, (uint32_t)(hi - lo));
			if (r < 0)
				return r;
			dst += hi - lo;
			pos += hi - lo;
			i++;
		}
		blk = pos / bs;
	}
	return 0;
}

static int v1_extents(struct image *im, uint64_t offset, uint64_t len, image_extent_fn fn, void *opaque)
{
	struct image_v1 *v = (struct image_v1 *)im;
	uint32_t bs = im->block_size;
	uint64_t pos = offset, end = offset + len, i = find(v, offset / bs);

	while (pos < end) {
		uint64_t next;
		bool zero = !(i < v->n && v->b[i].block == pos / bs);
		int r;

		if (zero) {
			next = i < v->n ? v->b[i].block * bs : end;
		} else {
			/* Blocks that follow each other, up to END. */
			while (i + 1 < v->n && v->b[i + 1].block == v->b[i].block + 1 && (v->b[i].block + 1) * bs < end)
				i++;
			next = (v->b[i].block + 1) * bs;
			i++;
		}
		if (next > end)
			next = end;
		r = fn(opaque, pos, next - pos, zero);
		if (r)
			return r;
		pos = next;
	}
	return 0;
}

static void v1_close(struct image *im)
{
	struct image_v1 *v = (struct image_v1 *)im;

	for (unsigned i = 0; i < v->nslots; i++)
		free(v->slot[i].buf);
	for (unsigned i = 0; v->fd && i < v->nlevels; i++)
		if (v->fd[i] >= 0)
			close(v->fd[i]);
	pthread_mutex_destroy(&v->lock);
	free(v->fd);
	free(v->num);
	free(v->b);
	repo_close(v->r);
	free(v);
}

static const struct image_ops v1_ops = {
	.read = v1_read,
	.extents = v1_extents,
	.close = v1_close,
};

static int cmp_block(const void *a, const void *b)
{
	const struct v1_block *x = a, *y = b;

	return x->block < y->block ? -1 : x->block > y->block;
}

/* The table of blocks that hold data at backup AT, newest backup first: a
 * block the newer one lists (zero or not) is not looked for further back. */
static int merge_chain(struct image_v1 *v, uint64_t nblocks)
{
	uint64_t *seen = calloc((nblocks + 63) / 64 + 1, sizeof(*seen)), cap = 0;
	int err = 0;

	if (!seen)
		goto nomem;
	for (unsigned lvl = v->nlevels; lvl-- > 0;) {
		struct repo_entry *e = NULL;
		uint64_t ne = 0;

		if ((err = repo_read_index(v->r, v->num[lvl], NULL, &e, &ne)) < 0)
			goto out;
		if ((v->fd[lvl] = repo_open_data(v->r, v->num[lvl], NULL)) < 0) {
			err = v->fd[lvl];
			free(e);
			goto out;
		}
		if (v->n + ne > cap) {
			struct v1_block *nb = realloc(v->b, (v->n + ne) * sizeof(*nb));

			if (!nb) {
				free(e);
				goto nomem;
			}
			v->b = nb;
			cap = v->n + ne;
		}
		for (uint64_t k = 0; k < ne; k++) {
			uint64_t blk = e[k].block; /* < nblocks: repo_read_index checked */

			if (seen[blk / 64] & (1ull << (blk % 64)))
				continue;
			seen[blk / 64] |= 1ull << (blk % 64);
			if (e[k].offset == REPO_ZERO_BLOCK)
				continue;
			v->b[v->n].block = blk;
			v->b[v->n].offset = e[k].offset;
			memcpy(v->b[v->n].hash, e[k].hash, REPO_HASH_LEN);
			v->b[v->n].level = lvl;
			v->n++;
		}
		free(e);
	}
	/* Each backup's blocks came in order; together they need sorting. */
	if (v->nlevels > 1)
		qsort(v->b, v->n, sizeof(*v->b), cmp_block);
	if (v->n < cap) {
		struct v1_block *nb = realloc(v->b, (v->n ? v->n : 1) * sizeof(*nb));

		if (nb)
			v->b = nb;
	}
	goto out;
nomem:
	bk_error("out of memory");
	err = -ENOMEM;
out:
	free(seen);
	return err;
}

int image_v1_open(const struct image_open_opts *o, struct image **out)
{
	struct image_v1 *v = NULL;
	struct repo *r = NULL;
	unsigned at;
	int err;

	if (o->key_file) {
		bk_error("%s: a version 1 repository is not encrypted: no --key-file", o->repo);
		return -EINVAL;
	}
	if ((err = repo_open(o->repo, REPO_READ, 0, &r)) < 0)
		return err;
	if (r->n == 0) {
		bk_error("repository %s holds no backup", o->repo);
		err = -ENOENT;
		goto fail;
	}
	if (o->at >= (int64_t)r->n) {
		bk_error("no backup %" PRId64 ": the repository holds 0 to %u", o->at, r->n - 1);
		err = -ENOENT;
		goto fail;
	}
	if (o->at >= 0) {
		at = (unsigned)o->at;
	} else {
		unsigned k = r->n;

		while (k > 0 && r->b[k - 1].error)
			k--;
		if (k == 0) {
			bk_error("repository %s holds no usable backup: %s", o->repo, r->b[r->n - 1].error);
			err = -EINVAL;
			goto fail;
		}
		at = k - 1;
		if (at != r->n - 1)
			bk_error("warning: %s; backup %u is the last usable one", r->b[r->n - 1].error, at);
	}

	v = calloc(1, sizeof(*v));
	if (!v || !(v->num = calloc(r->n, sizeof(*v->num))) || !(v->fd = malloc(r->n * sizeof(*v->fd)))) {
		bk_error("out of memory");
		err = -ENOMEM;
		goto fail;
	}
	v->r = r;
	r = NULL;
	pthread_mutex_init(&v->lock, NULL);
	for (unsigned i = 0; i < v->r->n; i++)
		v->fd[i] = -1;
	v->im = (struct image){
		.ops = &v1_ops, .size = v->r->b[at].size, .backup = at, .block_size = v->r->block_size,
	};
	v->nslots = CACHE_BYTES / v->im.block_size;
	v->nslots = v->nslots < 1 ? 1 : v->nslots > CACHE_SLOTS ? CACHE_SLOTS : v->nslots;
	for (unsigned i = 0; i < v->nslots; i++)
		v->slot[i].block = UINT64_MAX;

	/* The chain, from the full backup AT rests on up to AT. */
	if ((err = repo_chain(v->r, at, v->num)) < 0)
		goto fail;
	v->nlevels = (unsigned)err;
	if ((err = merge_chain(v, block_count(v->im.size, v->im.block_size))) < 0)
		goto fail;
	*out = &v->im;
	return 0;
fail:
	if (v && v->r)
		v1_close(&v->im);
	else if (v) {
		free(v->num);
		free(v->fd);
		free(v);
	}
	repo_close(r);
	return err;
}
