/* A restore point of a version 2 repository (image_internal.h): the backup's
 * block map, held in memory, and the repository's chunk table; a read fetches
 * the chunks its blocks name (adjacent ones in one request), checks each one
 * (authentication, decompression, id) and copies out what was asked for. A
 * zero block (all-zero id) reads as zeros and is a zero extent. Reads run on
 * many threads: each takes a seal context from a small pool. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backup/block_list.h"
#include "backup/image_internal.h"
#include "backup/repo2.h"
#include "backup/util.h"

#define POOL_MAX 64
/* Damage is said once per block: the messages said, up to this many. */
#define SAID_MAX 256

struct image2 {
	struct image im;
	struct repo2 *r;
	const struct repo2_backup *b;
	uint8_t (*map)[CHUNK_ID_LEN];
	pthread_mutex_t lock;
	struct seal_ctx *pool[POOL_MAX];
	unsigned n_pool;
	char *said[SAID_MAX];
	unsigned n_said;
};

/* Print WHY (about backup NUM) unless it was said before. */
static void say_once(struct image2 *m, const char *why)
{
	bool seen = false;

	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < m->n_said && !seen; i++)
		seen = !strcmp(m->said[i], why);
	if (!seen && m->n_said < SAID_MAX)
		m->said[m->n_said++] = strdup(why);
	pthread_mutex_unlock(&m->lock);
	if (!seen)
		bk_error("backup %u: %s", m->im.backup, why);
}

static struct image2 *im2(struct image *im)
{
	return (struct image2 *)im;
}

static struct seal_ctx *ctx_get(struct image2 *m)
{
	struct seal_ctx *c = NULL;

	pthread_mutex_lock(&m->lock);
	if (m->n_pool)
		c = m->pool[--m->n_pool];
	pthread_mutex_unlock(&m->lock);
	if (!c && seal_ctx_new(m->r->seal, &c) < 0)
		return NULL;
	return c;
}

static void ctx_put(struct image2 *m, struct seal_ctx *c)
{
	pthread_mutex_lock(&m->lock);
	if (m->n_pool < POOL_MAX) {
		m->pool[m->n_pool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&m->lock);
	seal_ctx_free(c);
}

static int v2_read(struct image *im, void *buf, size_t len, uint64_t offset)
{
	struct image2 *m = im2(im);
	uint32_t bs = im->block_size;
	uint64_t first = offset / bs, last = (offset + len - 1) / bs, count = last - first + 1;
	bool aligned = offset % bs == 0 && ((offset + len) % bs == 0 || offset + len == im->size);
	struct seal_ctx *c = ctx_get(m);
	char *tmp = NULL, *why = NULL;
	int e;

	if (!c) {
		bk_error("out of memory");
		return -EIO;
	}
	/* Whole blocks go straight into the caller's buffer. */
	if (!aligned && !(tmp = malloc(count * bs))) {
		ctx_put(m, c);
		bk_error("out of memory");
		return -EIO;
	}
	e = repo2_read_blocks(m->r, c, (const uint8_t(*)[CHUNK_ID_LEN])m->map, im->size, first, count,
			      aligned ? buf : tmp, &why);
	ctx_put(m, c);
	if (e < 0) {
		say_once(m, why ? why : strerror(-e));
		free(why);
		free(tmp);
		return -EIO;
	}
	if (tmp) {
		memcpy(buf, tmp + (offset - first * bs), len);
		free(tmp);
	}
	return 0;
}

static int v2_extents(struct image *im, uint64_t offset, uint64_t len, image_extent_fn fn, void *opaque)
{
	struct image2 *m = im2(im);
	uint32_t bs = im->block_size;
	uint64_t end = offset + len, pos = offset;

	while (pos < end) {
		uint64_t b = pos / bs, next = b + 1;
		bool zero = repo2_zero_id(m->map[b]);
		uint64_t stop;
		int r;

		while (next * (uint64_t)bs < end && repo2_zero_id(m->map[next]) == zero)
			next++;
		stop = next * (uint64_t)bs < end ? next * (uint64_t)bs : end;
		if ((r = fn(opaque, pos, stop - pos, zero)) != 0)
			return r;
		pos = stop;
	}
	return 0;
}

static void v2_close(struct image *im)
{
	struct image2 *m = im2(im);

	for (unsigned i = 0; i < m->n_pool; i++)
		seal_ctx_free(m->pool[i]);
	for (unsigned i = 0; i < m->n_said; i++)
		free(m->said[i]);
	pthread_mutex_destroy(&m->lock);
	free(m->map);
	repo2_close(m->r);
	free(m);
}

static const struct image_ops image_v2_ops = {
	.read = v2_read,
	.extents = v2_extents,
	.close = v2_close,
};

int image_v2_open(const struct image_open_opts *o, struct image **out)
{
	struct image2 *m = calloc(1, sizeof(*m));
	struct seal_ctx *c = NULL;
	int e;

	if (!m) {
		bk_error("out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&m->lock, NULL);
	if ((e = repo2_open(o->repo, STORE_LOCK_READ, NULL, o->key_file, &m->r)) < 0)
		goto fail;
	if (o->at < 0) {
		if (!(m->b = repo2_last(m->r, o->device))) {
			bk_error("%s holds no usable backup%s%s", o->repo, o->device ? " of " : "",
				 o->device ? o->device : "");
			e = -ENOENT;
			goto fail;
		}
	} else if (!(m->b = repo2_backup(m->r, (unsigned)o->at))) {
		e = -ENOENT;
		goto fail;
	}
	if ((e = seal_ctx_new(m->r->seal, &c)) < 0 || (e = repo2_load_chunks(m->r, c, false)) < 0 ||
	    (e = repo2_read_map(m->r, m->b, c, NULL, &m->map)) < 0)
		goto fail;
	m->pool[m->n_pool++] = c;
	m->im = (struct image){ .ops = &image_v2_ops, .size = m->b->size, .backup = m->b->num,
				.block_size = m->b->block_size };
	*out = &m->im;
	return 0;
fail:
	seal_ctx_free(c);
	pthread_mutex_destroy(&m->lock);
	free(m->map);
	repo2_close(m->r);
	free(m);
	return e;
}
