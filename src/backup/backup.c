/* full and incremental: decide which blocks to read (the data of the image,
 * or what its dirty bitmap marks since the chain's last backup), read them
 * over several NBD connections at once, and store them in a new backup of
 * the repository: all-zero blocks as index entries only, the others in the
 * data file with their checksums. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/block_list.h"
#include "backup/progress.h"
#include "backup/repo.h"
#include "backup/repo2.h"
#include "backup/seal.h"
#include "backup/util.h"
#include "backup/source.h"
#include "common/io.h"

/* What one reader asks for in one request. */
#define ITEM_BYTES (1u << 20)
/* Requests a reader keeps in flight on its connection, so that the server
 * always has the next one while the reader hashes the last, and a cold
 * origin sees a queue deep enough for its disk. */
#define READER_DEPTH 8
/* Buffers per reader: its requests', and one the writer empties. */
#define BUFFERS_PER_READER (READER_DEPTH + 1)
/* The bytes of one item, the most a buffer's first part holds. */
#define ITEM_BYTES_ROUNDED(c) (ITEM_BYTES > (c)->block_size ? ITEM_BYTES : (size_t)(c)->block_size)

struct item {
	uint64_t first, count; /* blocks */
	uint64_t entry;        /* index of its first entry */
};

/* A buffer on its way from a reader to the writer: what ITEM's blocks are
 * stored as (version 1: those that are not all zeros, packed; version 2: the
 * new chunks, sealed), KEPT bytes at DATA. */
struct filled {
	char *buf, *data;
	size_t kept;
	const struct item *item;
};

/* A block of a version 2 backup, as a reader leaves it for the writer. */
struct entry2 {
	uint8_t id[CHUNK_ID_LEN];
	uint32_t sealed_off, sealed_len; /* in the filled data, if NEW */
	bool zero, new;
};

struct copy;
struct reader;
/* What a format does with an item: PACK in the reader's thread, after the
 * read, turns BUF's bytes into what STORE, in the writer's, stores. */
struct copy_format {
	void (*pack)(struct copy *c, struct reader *rd, const struct item *it, char *buf, struct filled *f);
	int (*store)(struct copy *c, const struct filled *f);
};

/* Readers (one per NBD connection) fill buffers; one writer appends them to
 * the data file, so the file is written sequentially by one thread and the
 * readers never wait on each other's writes. */
struct copy {
	const char *uri;
	const struct source_tls *tls;
	uint64_t size;
	uint32_t block_size;
	int datafd;
	int directfd; /* the data file again, O_DIRECT; < 0 where that is not possible */
	struct item *items;
	size_t n_items;
	const struct copy_format *fmt;
	size_t extra_bytes; /* each buffer's room beyond the item's bytes */
	struct repo_entry *entries; /* version 1 */
	struct entry2 *entries2;    /* version 2 */
	struct repo2 *r2;
	const struct seal *seal;
	struct pack_writer *pw;
	atomic_size_t next_item;
	atomic_uint_fast64_t bytes_read, bytes_done, zero_blocks;
	atomic_int err;
	const atomic_bool *stop; /* asked to stop: -EINTR */
	uint64_t data_end; /* the writer's */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	char **free_bufs;
	size_t n_free;
	struct filled *queue; /* the writer's work, a ring */
	size_t q_head, q_len, q_cap;
	unsigned readers_left;
};

static bool all_zero(const char *p, size_t len)
{
	static const char zero[16];

	if (len < 16)
		return memcmp(p, zero, len) == 0;
	return memcmp(p, zero, 16) == 0 && memcmp(p, p + 16, len - 16) == 0;
}

/* The first error stops the copy; true for the first, whose message is the
 * one worth printing (the requests in flight fail after it too). */
static bool set_error(struct copy *c, int err)
{
	int zero = 0;
	bool first;

	pthread_mutex_lock(&c->lock);
	first = atomic_compare_exchange_strong(&c->err, &zero, err);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return first;
}

static size_t item_bytes(const struct copy *c, const struct item *it)
{
	uint64_t start = it->first * c->block_size;
	uint64_t end = (it->first + it->count) * c->block_size;

	return (size_t)((end > c->size ? c->size : end) - start);
}

/* Version 1: ITEM has been read into BUF: hash its blocks, and pack the
 * ones that are not all zeros at its start; their entries get offsets
 * relative to BUF. */
static void pack_item(struct copy *c, struct reader *rd, const struct item *it, char *buf, struct filled *f)
{
	size_t *kept = &f->kept;

	(void)rd;
	f->data = buf;
	*kept = 0;
	for (uint64_t i = 0; i < it->count; i++) {
		struct repo_entry *e = &c->entries[it->entry + i];
		uint32_t blen = block_length(it->first + i, c->size, c->block_size);
		char *p = buf + i * c->block_size;

		e->block = it->first + i;
		repo_hash(p, blen, e->hash);
		if (all_zero(p, blen)) {
			e->offset = REPO_ZERO_BLOCK;
			atomic_fetch_add(&c->zero_blocks, 1);
			continue;
		}
		if (buf + *kept != p)
			memmove(buf + *kept, p, blen);
		e->offset = *kept;
		*kept += blen;
	}
}

struct slot {
	char *buf;
	const struct item *item;
	bool busy, done;
	int err;
};

/* A reader's state outlives its thread: libnbd may complete a request of a
 * dead connection (with an error) as late as nbd_close(). */
struct reader {
	struct copy *c;
	struct nbd_handle *h;
	pthread_t thread;
	struct slot slots[READER_DEPTH];
	struct seal_ctx *sc; /* version 2 */
};

static int on_read(void *opaque, int *error)
{
	struct slot *s = opaque;

	s->err = *error;
	s->done = true;
	return 1; /* retire the command */
}

/* A buffer from the pool; with WAIT, wait for one. */
static char *get_buffer(struct copy *c, bool wait)
{
	char *buf = NULL;

	pthread_mutex_lock(&c->lock);
	while (wait && c->n_free == 0 && atomic_load(&c->err) == 0)
		pthread_cond_wait(&c->cond, &c->lock);
	if (c->n_free && atomic_load(&c->err) == 0)
		buf = c->free_bufs[--c->n_free];
	pthread_mutex_unlock(&c->lock);
	return buf;
}

static void put_buffer(struct copy *c, char *buf)
{
	pthread_mutex_lock(&c->lock);
	c->free_bufs[c->n_free++] = buf;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* A reader: up to READER_DEPTH reads in flight on its own connection; each
 * one done is hashed, packed and handed to the writer. */
static void *reader_run(void *opaque)
{
	struct reader *rd = opaque;
	struct copy *c = rd->c;
	struct slot *slots = rd->slots;
	unsigned busy = 0;
	bool more = true;

	for (;;) {
		/* Issue what the depth and the buffers allow. */
		while (more && busy < READER_DEPTH && atomic_load(&c->err) == 0) {
			struct slot *s = NULL;
			char *buf = get_buffer(c, busy == 0);
			size_t i;

			if (!buf)
				break;
			if ((i = atomic_fetch_add(&c->next_item, 1)) >= c->n_items) {
				put_buffer(c, buf);
				more = false;
				break;
			}
			for (unsigned k = 0; k < READER_DEPTH && !s; k++)
				if (!slots[k].busy)
					s = &slots[k];
			*s = (struct slot){ .buf = buf, .item = &c->items[i], .busy = true };
			if (nbd_aio_pread(rd->h, buf, item_bytes(c, s->item), s->item->first * c->block_size,
					  (nbd_completion_callback){ .callback = on_read, .user_data = s }, 0) < 0) {
				s->busy = false;
				put_buffer(c, buf);
				if (set_error(c, -EIO))
					bk_error("%s: %s", c->uri, nbd_get_error());
				break;
			}
			busy++;
		}
		if (busy == 0)
			break;
		if (nbd_poll(rd->h, -1) < 0) {
			if (set_error(c, -EIO))
				bk_error("%s: %s", c->uri, nbd_get_error());
			break; /* dead: copy_blocks takes back what is still busy */
		}
		for (unsigned k = 0; k < READER_DEPTH; k++) {
			struct slot *s = &slots[k];

			if (!s->busy || !s->done)
				continue;
			s->busy = false;
			busy--;
			if (s->err || atomic_load(&c->err)) {
				put_buffer(c, s->buf);
				if (set_error(c, -EIO) && s->err)
					bk_error("%s: reading %zu bytes at %" PRIu64 ": %s", c->uri,
						 item_bytes(c, s->item), s->item->first * c->block_size, strerror(s->err));
				continue;
			}
			struct filled f = { .buf = s->buf, .item = s->item };

			atomic_fetch_add(&c->bytes_read, item_bytes(c, s->item));
			c->fmt->pack(c, rd, s->item, s->buf, &f);
			pthread_mutex_lock(&c->lock);
			c->queue[(c->q_head + c->q_len++) % c->q_cap] = f;
			pthread_cond_broadcast(&c->cond);
			pthread_mutex_unlock(&c->lock);
		}
	}
	pthread_mutex_lock(&c->lock);
	c->readers_left--;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Version 1: append the packed blocks to the data file, and make their
 * entries' offsets absolute. */
static int store_item(struct copy *c, const struct filled *f)
{
	int r = 0;

	/* O_DIRECT where the piece allows it: the backup does not pass
	 * through (and push the machine's working set out of) the page
	 * cache, and the copy into it, the writer's largest cost, is gone.
	 * An incremental's scattered small pieces go through the cache. */
	if (f->kept)
		r = io_pwrite_direct(c->datafd, c->directfd, f->data, f->kept, c->data_end);
	if (r < 0) {
		bk_error("writing the backup's data: %s", strerror(-r));
		return r;
	}
	for (uint64_t i = 0; i < f->item->count; i++)
		if (c->entries[f->item->entry + i].offset != REPO_ZERO_BLOCK)
			c->entries[f->item->entry + i].offset += c->data_end;
	c->data_end += f->kept;
	return 0;
}

static const struct copy_format format_v1 = { pack_item, store_item };

/* Version 2: each block's chunk id; a block that is not all zeros and whose
 * chunk the repository does not hold (nor another reader is storing) is
 * sealed into the buffer's second part. */
static void pack_item2(struct copy *c, struct reader *rd, const struct item *it, char *buf, struct filled *f)
{
	char *out = buf + ITEM_BYTES_ROUNDED(c);

	f->data = out;
	f->kept = 0;
	for (uint64_t i = 0; i < it->count; i++) {
		struct entry2 *e = &c->entries2[it->entry + i];
		uint32_t blen = block_length(it->first + i, c->size, c->block_size);
		char *p = buf + i * c->block_size;
		long n;

		*e = (struct entry2){ .zero = all_zero(p, blen) };
		if (e->zero) {
			atomic_fetch_add(&c->zero_blocks, 1);
			continue;
		}
		seal_chunk_id(rd->sc, p, blen, e->id);
		if (!repo2_claim_chunk(c->r2, e->id))
			continue;
		if ((n = seal_chunk(rd->sc, e->id, p, blen, out + f->kept)) < 0) {
			bk_error("sealing a chunk: %s", strerror((int)-n));
			set_error(c, (int)n);
			return;
		}
		e->new = true;
		e->sealed_off = (uint32_t)f->kept;
		e->sealed_len = (uint32_t)n;
		f->kept += (size_t)n;
	}
}

static int store_item2(struct copy *c, const struct filled *f)
{
	for (uint64_t i = 0; i < f->item->count; i++) {
		const struct entry2 *e = &c->entries2[f->item->entry + i];
		int r;

		if (!e->new)
			continue;
		r = pack_writer_add(c->pw, e->id, f->data + e->sealed_off, e->sealed_len,
				    block_length(f->item->first + i, c->size, c->block_size));
		if (r < 0)
			return r;
	}
	return 0;
}

static const struct copy_format format_v2 = { pack_item2, store_item2 };

/* The writer: append each filled buffer to the data file and make its
 * entries' offsets absolute. Runs until the readers are done and the queue
 * is empty. */
static void *writer_run(void *opaque)
{
	struct copy *c = opaque;

	for (;;) {
		struct filled f;
		int r;

		pthread_mutex_lock(&c->lock);
		while (c->q_len == 0 && c->readers_left > 0)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->q_len == 0) {
			pthread_mutex_unlock(&c->lock);
			return NULL;
		}
		f = c->queue[c->q_head];
		c->q_head = (c->q_head + 1) % c->q_cap;
		c->q_len--;
		pthread_mutex_unlock(&c->lock);

		if (atomic_load(&c->err) == 0 && (r = c->fmt->store(c, &f)) < 0)
			set_error(c, r);
		atomic_fetch_add(&c->bytes_done, (f.item->count) * (uint64_t)c->block_size);

		pthread_mutex_lock(&c->lock);
		c->free_bufs[c->n_free++] = f.buf;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
	}
}

/* Cut the runs into items of at most ITEM_BYTES. */
static int make_items(struct copy *c, const struct block_list *l)
{
	uint64_t per = ITEM_BYTES / c->block_size ? ITEM_BYTES / c->block_size : 1, entry = 0;
	size_t n = 0;

	for (size_t i = 0; i < l->n; i++)
		n += (size_t)((l->v[i].count + per - 1) / per);
	c->items = calloc(n ? n : 1, sizeof(*c->items));
	if (!c->items)
		return -ENOMEM;
	for (size_t i = 0; i < l->n; i++)
		for (uint64_t b = 0; b < l->v[i].count; b += per) {
			uint64_t count = l->v[i].count - b < per ? l->v[i].count - b : per;

			c->items[c->n_items++] = (struct item){ l->v[i].first + b, count, entry };
			entry += count;
		}
	return 0;
}

static void free_buffers(struct copy *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(c->free_bufs[i]);
	free(c->free_bufs);
	free(c->queue);
}

/* Read the blocks of L with CONNECTIONS readers, the first on H, which it
 * closes. */
static int copy_blocks(struct copy *c, const struct block_list *l, struct nbd_handle *h, unsigned connections,
		       struct progress *pg)
{
	struct reader *rd;
	pthread_t writer;
	size_t bufs, buf_bytes = ITEM_BYTES_ROUNDED(c) + c->extra_bytes;
	unsigned n, started = 0;
	int r;

	if ((r = make_items(c, l)) < 0 ||
	    (c->fmt == &format_v1 && !(c->entries = calloc(l->blocks ? l->blocks : 1, sizeof(*c->entries)))) ||
	    (c->fmt == &format_v2 && !(c->entries2 = calloc(l->blocks ? l->blocks : 1, sizeof(*c->entries2))))) {
		bk_error("out of memory");
		return -ENOMEM;
	}
	/* More connections only where the server says they see the same data
	 * (qemu-nbd, say, serves one client at a time unless told otherwise). */
	if (nbd_can_multi_conn(h) != 1)
		connections = 1;
	n = connections < c->n_items ? connections : (unsigned)c->n_items;
	if (n == 0) {
		nbd_close(h);
		return 0;
	}
	bufs = (size_t)n * BUFFERS_PER_READER;
	rd = calloc(n, sizeof(*rd));
	c->free_bufs = calloc(bufs, sizeof(*c->free_bufs));
	c->queue = calloc(bufs, sizeof(*c->queue));
	if (!rd || !c->free_bufs || !c->queue) {
		nbd_close(h);
		free(rd);
		free_buffers(c, 0);
		bk_error("out of memory");
		return -ENOMEM;
	}
	c->q_cap = bufs;
	for (; c->n_free < bufs; c->n_free++)
		if (!(c->free_bufs[c->n_free] = io_alloc_aligned(buf_bytes))) {
			nbd_close(h);
			free(rd);
			free_buffers(c, c->n_free);
			bk_error("out of memory");
			return -ENOMEM;
		}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->readers_left = n;
	c->directfd = io_reopen_direct(c->datafd); /* tmpfs, say, has none */
	rd[0].h = h;
	if (pthread_create(&writer, NULL, writer_run, c) != 0) {
		bk_error("cannot start a thread");
		r = -EAGAIN;
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		rd[i].c = c;
		if (c->seal && seal_ctx_new(c->seal, &rd[i].sc) < 0) {
			set_error(c, -ENOMEM);
			break;
		}
		if (i > 0)
			rd[i].h = source_connect(c->uri, c->tls);
		if (!rd[i].h || pthread_create(&rd[i].thread, NULL, reader_run, &rd[i]) != 0) {
			if (rd[i].h)
				bk_error("cannot start a thread");
			set_error(c, -EIO);
			break;
		}
		started++;
	}
	/* Readers that never started are not waited for. */
	pthread_mutex_lock(&c->lock);
	c->readers_left -= n - started;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	/* Wake for the progress bar ten times a second, and at once when the
	 * readers are done. */
	pthread_mutex_lock(&c->lock);
	while (c->readers_left > 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&c->cond, &c->lock, &ts);
		pthread_mutex_unlock(&c->lock);
		progress_update(pg, atomic_load(&c->bytes_done));
		/* No reader issues another request; the writer still takes
		 * what was read, into a backup that is then not committed. */
		if (c->stop && atomic_load(c->stop))
			set_error(c, -EINTR);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(rd[i].thread, NULL);
	pthread_join(writer, NULL);
	progress_update(pg, atomic_load(&c->bytes_done));
	r = atomic_load(&c->err);
out:
	for (unsigned i = 0; i < n; i++) {
		if (rd[i].h)
			nbd_close(rd[i].h);
		seal_ctx_free(rd[i].sc);
		for (unsigned k = 0; k < READER_DEPTH; k++)
			if (rd[i].slots[k].busy)
				c->free_bufs[c->n_free++] = rd[i].slots[k].buf;
	}
	if (c->directfd >= 0)
		close(c->directfd);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free_buffers(c, c->n_free);
	free(rd);
	return r;
}

/* What an incremental continues: the chain's last backup. */
struct chain_tip {
	unsigned num;
	uint64_t size;
	const char *generation; /* NULL if none */
	int64_t changes_number; /* -1 if none */
};

/* Which context an incremental reads, after checking that the image
 * continues the chain whose last backup is LAST. */
static char *incremental_context(const struct backup_opts *o, const struct chain_tip *last,
				 const struct source_info *si)
{
	char *ctx = NULL;

	if (si->size != last->size) {
		bk_error("%s is %" PRIu64 " bytes, backup %u was %" PRIu64 ": run full", o->uri, si->size, last->num,
			 last->size);
		return NULL;
	}
	if (o->bitmap) {
		if (!(ctx = source_bitmap_context(o->bitmap)))
			bk_error("out of memory");
		return ctx;
	}
	if (!si->generation) {
		bk_error("%s does not say which changes it tracks (not a bdfilterd snapshot image): "
			 "name its dirty bitmap with --bitmap", o->uri);
		return NULL;
	}
	if (!last->generation || last->changes_number < 0) {
		bk_error("backup %u was not taken from a bdfilterd snapshot image: name a bitmap with --bitmap, "
			 "or run full", last->num);
		return NULL;
	}
	if (strcmp(si->generation, last->generation) != 0) {
		bk_error("generation changed (chain %s, server %s): the changes since backup %u are unknown; run full",
			 last->generation, si->generation, last->num);
		return NULL;
	}
	if (si->changes_number <= last->changes_number) {
		bk_error("%s is snapshot %" PRId64 ", backup %u was taken from snapshot %" PRId64
			 ": take a new snapshot first",
			 o->uri, si->changes_number, last->num, last->changes_number);
		return NULL;
	}
	if (asprintf(&ctx, "qemu:dirty-bitmap:%s/%" PRId64, last->generation, last->changes_number) < 0) {
		bk_error("out of memory");
		ctx = NULL;
	}
	return ctx;
}

struct incremental {
	const struct backup_opts *o;
	struct chain_tip last;
	bool have_last; /* with CHOOSE: the device has a backup */
	char *reason;   /* with CHOOSE: why full, or why incremental */
};

/* CHOOSE: the context of an incremental where the export goes on from the
 * device's last backup, else NULL for a full; either way ic->reason says why
 * (checked in the order a person would ask). */
static char *chosen_context(struct incremental *ic, const struct source_info *si, int *err)
{
	const struct chain_tip *last = &ic->last;
	char *ctx = NULL;

	if (!ic->have_last)
		ic->reason = strdup("first backup of the device");
	else if (ic->o->full_reason)
		ic->reason = strdup(ic->o->full_reason);
	else if (!last->generation || last->changes_number < 0)
		ic->reason = bk_format("backup %u has no CBT generation", last->num);
	else if (!si->generation)
		ic->reason = strdup("the image publishes no changes (its CBT map could not be reset)");
	else if (strcmp(si->generation, last->generation) != 0)
		ic->reason = bk_format("generation changed: %s -> %s", last->generation, si->generation);
	else if (si->size != last->size)
		ic->reason = bk_format("size changed: %" PRIu64 " -> %" PRIu64, last->size, si->size);
	else if (si->changes_number <= last->changes_number)
		ic->reason = bk_format("snapshot %" PRId64 " is not after backup %u's (%" PRId64 ")", si->changes_number,
				       last->num, last->changes_number);
	else if (!(ctx = bk_format("qemu:dirty-bitmap:%s/%" PRId64, last->generation, last->changes_number)))
		ic->reason = NULL;
	else
		ic->reason = bk_format("generation unchanged: changes since backup %u (snapshot %" PRId64 ")",
				       last->num, last->changes_number);
	if (!ic->reason) {
		free(ctx);
		bk_error("out of memory");
		*err = -ENOMEM;
		return NULL;
	}
	*err = 0;
	return ctx;
}

static char *choose_context(void *opaque, const struct source_info *si, int *err)
{
	struct incremental *ic = opaque;
	char *ctx;

	if (ic->o->choose)
		return chosen_context(ic, si, err);
	ctx = incremental_context(ic->o, &ic->last, si);

	*err = ctx ? 0 : -EINVAL;
	return ctx;
}

static int backup1_run(const struct backup_opts *o, struct json_object **result)
{
	struct repo *r = NULL;
	struct nbd_handle *h = NULL;
	struct source_info si = { .changes_number = -1 };
	const struct backup_info *last = NULL;
	struct backup_info info = { .changes_number = -1, .parent = -1 };
	struct block_list l = { 0 };
	struct backup_writer w = { .tmpfd = -1, .datafd = -1 };
	struct copy c = { 0 };
	struct progress *pg = NULL;
	struct incremental ic;
	char *ctx = NULL;
	double t0 = bk_seconds();
	int err;

	err = repo_open(o->repo, o->incremental ? REPO_WRITE : REPO_CREATE, o->block_size, &r);
	if (err < 0)
		return err;
	if (o->incremental) {
		if (r->n == 0) {
			bk_error("%s holds no backup yet: run full first", o->repo);
			err = -ENOENT;
			goto out;
		}
		if (!(last = repo_backup(r, r->n - 1))) {
			err = -EINVAL;
			goto out;
		}
	}
	/* The context an incremental reads depends on what the export says of
	 * itself, and is asked for in the same handshake. */
	ic = (struct incremental){ .o = o };
	if (last)
		ic.last = (struct chain_tip){ last->num, last->size, last->generation, last->changes_number };
	h = source_open(o->uri, o->tls, &si, o->incremental ? choose_context : NULL, &ic, &ctx, &err);
	if (!h)
		goto out;
	/* A snapshot image, or an export nobody can write, holds still while it
	 * is read; a live device does not. */
	if (!si.generation && nbd_is_read_only(h) == 0)
		fprintf(stderr, "bdfilter-backup: warning: %s is writable and not a snapshot image: "
				"what is written to it meanwhile may be in the backup in part\n",
			o->uri);
	err = source_blocks(h, o->uri, ctx ? ctx : LIBNBD_CONTEXT_BASE_ALLOCATION, si.size, r->block_size, &l);
	if (err < 0)
		goto out;
	if ((err = repo_backup_begin(r, &w)) < 0)
		goto out;
	c = (struct copy){ .uri = o->uri, .tls = o->tls, .size = si.size, .block_size = r->block_size, .datafd = w.datafd,
			   .fmt = &format_v1 };
	pg = progress_new(o->show_progress, o->incremental ? "incremental" : "full",
			  l.blocks * (uint64_t)r->block_size);
	err = copy_blocks(&c, &l, h, o->connections, pg);
	h = NULL; /* copy_blocks closed it */
	progress_done(pg);
	if (err < 0)
		goto out;

	info.full = !o->incremental;
	info.parent = o->incremental ? (int)last->num : -1;
	info.from = strdup(o->uri);
	info.size = si.size;
	info.block_size = r->block_size;
	info.generation = si.generation ? strdup(si.generation) : NULL;
	info.changes_number = si.changes_number;
	info.bitmap = ctx ? strdup(ctx) : NULL;
	info.zero_blocks = atomic_load(&c.zero_blocks);
	info.bytes_stored = c.data_end;
	if (!info.from || (si.generation && !info.generation) || (ctx && !info.bitmap)) {
		bk_error("out of memory");
		err = -ENOMEM;
		goto out;
	}
	if ((err = repo_backup_commit(&w, &info, c.entries, l.blocks)) < 0)
		goto out;

	*result = json_object_new_object();
	json_object_object_add(*result, "backup", json_object_new_int64(info.num));
	json_object_object_add(*result, "kind", json_object_new_string(info.full ? "full" : "incremental"));
	json_object_object_add(*result, "from", json_object_new_string(o->uri));
	json_object_object_add(*result, "size", json_object_new_int64((int64_t)info.size));
	json_object_object_add(*result, "block_size", json_object_new_int64(info.block_size));
	json_object_object_add(*result, "generation", info.generation ? json_object_new_string(info.generation) : NULL);
	json_object_object_add(*result, "changes_number",
			       info.changes_number >= 0 ? json_object_new_int64(info.changes_number) : NULL);
	json_object_object_add(*result, "bitmap", info.bitmap ? json_object_new_string(info.bitmap) : NULL);
	json_object_object_add(*result, "blocks", json_object_new_int64((int64_t)info.blocks));
	json_object_object_add(*result, "zero_blocks", json_object_new_int64((int64_t)info.zero_blocks));
	json_object_object_add(*result, "bytes_read", json_object_new_int64((int64_t)atomic_load(&c.bytes_read)));
	json_object_object_add(*result, "bytes_stored", json_object_new_int64((int64_t)info.bytes_stored));
	json_object_object_add(*result, "seconds", json_object_new_double(bk_seconds() - t0));
out:
	if (w.tmpfd >= 0)
		repo_backup_abort(&w);
	free(c.items);
	free(c.entries);
	free(info.from);
	free(info.generation);
	free(info.bitmap);
	free(info.time);
	free(ctx);
	block_list_free(&l);
	source_info_free(&si);
	if (h)
		nbd_close(h);
	repo_close(r);
	return err;
}

/* The name backups of the export URI names go under: the export's name,
 * without the "-image" bdfilterd gives a snapshot image of a device. */
static char *device_name(const char *uri)
{
	char *name = source_uri_export(uri);
	size_t len;

	if (!name || !*name) {
		free(name);
		return strdup("default");
	}
	len = strlen(name);
	if (len > 6 && !strcmp(name + len - 6, "-image"))
		name[len - 6] = 0;
	return name;
}

static bool valid_device_name(const char *s)
{
	if (!*s || strlen(s) > 255)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static int backup2_run(const struct backup_opts *o, struct json_object **result)
{
	struct repo2_create cr = {
		.block_size = o->block_size,
		.level = o->level < 0 ? REPO2_LEVEL_DEFAULT : o->level,
		.key_file = o->key_file,
	};
	struct repo2 *r = NULL;
	struct seal_ctx *sc = NULL;
	struct nbd_handle *h = NULL;
	struct source_info si = { .changes_number = -1 };
	const struct repo2_backup *last = NULL;
	struct repo2_backup nb = { .parent = -1, .changes_number = -1 };
	uint8_t(*map)[CHUNK_ID_LEN] = NULL;
	struct block_list l = { 0 };
	struct pack_writer pw = { 0 };
	struct copy c = { 0 };
	struct progress *pg = NULL;
	struct incremental ic = { .o = o };
	bool incremental = o->incremental;
	char *ctx = NULL, *device = NULL, *index = NULL;
	const char *reason = NULL;
	double t0 = bk_seconds();
	uint64_t blocks, data_blocks = 0;
	unsigned num;
	int err;

	if (o->opened)
		r = o->opened;
	else if ((err = repo2_open(o->repo, STORE_LOCK_APPEND, o->incremental ? NULL : &cr, o->key_file, &r)) < 0)
		return err;
	if ((err = seal_ctx_new(r->seal, &sc)) < 0 || (err = repo2_load_chunks(r, sc, true)) < 0)
		goto out;
	/* The device: named, or from the URI (not from a connection: qemu-nbd,
	 * say, serves one client and is gone after it). */
	if (!(device = o->device ? strdup(o->device) : device_name(o->uri))) {
		err = -ENOMEM;
		goto out;
	}
	if (!valid_device_name(device)) {
		bk_error("--device '%s': a name of 1 to 255 printable characters is needed", device);
		err = -EINVAL;
		goto out;
	}
	/* What an incremental continues; with CHOOSE, what it would. */
	if ((o->incremental || o->choose) && (last = repo2_last(r, device))) {
		ic.have_last = true;
		ic.last = (struct chain_tip){ last->num, last->size, last->generation, last->changes_number };
	} else if (o->incremental) {
		bk_error("%s holds no backup of %s yet: run full first", o->repo, device);
		err = -ENOENT;
		goto out;
	}
	h = source_open(o->uri, o->tls, &si, o->incremental || o->choose ? choose_context : NULL, &ic, &ctx, &err);
	if (!h)
		goto out;
	if (o->choose) {
		incremental = ctx != NULL;
		if (!incremental)
			last = NULL;
	}
	if (!o->choose && !si.generation && nbd_is_read_only(h) == 0)
		fprintf(stderr, "bdfilter-backup: warning: %s is writable and not a snapshot image: "
				"what is written to it meanwhile may be in the backup in part\n",
			o->uri);
	if (ic.reason) {
		reason = ic.reason;
	} else if (!o->incremental) {
		const struct repo2_backup *prev = repo2_last(r, device);

		reason = !prev ? "first backup of the device" : "full backup asked for";
	} else {
		reason = "changes since the device's last backup";
	}
	if (o->stop && atomic_load(o->stop)) {
		err = -EINTR;
		goto out;
	}
	blocks = block_count(si.size, r->block_size);
	if (blocks > SIZE_MAX / CHUNK_ID_LEN || !(map = calloc(blocks ? blocks : 1, CHUNK_ID_LEN))) {
		bk_error("out of memory");
		err = -ENOMEM;
		goto out;
	}
	if (last) {
		uint8_t(*parent)[CHUNK_ID_LEN];

		if ((err = repo2_read_map(r, last, sc, NULL, &parent)) < 0)
			goto out;
		memcpy(map, parent, blocks * CHUNK_ID_LEN);
		free(parent);
	}
	err = source_blocks(h, o->uri, ctx ? ctx : LIBNBD_CONTEXT_BASE_ALLOCATION, si.size, r->block_size, &l);
	if (err < 0)
		goto out;
	if ((err = pack_writer_init(&pw, r)) < 0)
		goto out;
	c = (struct copy){ .uri = o->uri, .tls = o->tls, .size = si.size, .block_size = r->block_size,
			   .datafd = -1, .fmt = &format_v2, .r2 = r, .seal = r->seal, .pw = &pw, .stop = o->stop };
	c.extra_bytes = ITEM_BYTES_ROUNDED(&c) + (ITEM_BYTES_ROUNDED(&c) / r->block_size + 1) * SEAL_OVERHEAD;
	pg = progress_new(o->show_progress, incremental ? "incremental" : "full", l.blocks * (uint64_t)r->block_size);
	err = copy_blocks(&c, &l, h, o->connections, pg);
	h = NULL;
	progress_done(pg);
	if (err == 0 && o->stop && atomic_load(o->stop))
		err = -EINTR; /* read, but not committed */
	if (err < 0)
		goto out;
	for (size_t i = 0; i < c.n_items; i++)
		for (uint64_t k = 0; k < c.items[i].count; k++) {
			const struct entry2 *e = &c.entries2[c.items[i].entry + k];

			if (e->zero)
				memset(map[c.items[i].first + k], 0, CHUNK_ID_LEN);
			else
				memcpy(map[c.items[i].first + k], e->id, CHUNK_ID_LEN);
		}
	for (uint64_t b = 0; b < blocks; b++)
		data_blocks += !repo2_zero_id(map[b]);
	if ((err = pack_writer_finish(&pw, sc, &index)) < 0)
		goto out;

	nb.device = device;
	device = NULL;
	nb.full = !incremental;
	nb.parent = last ? (int)last->num : -1;
	nb.from = strdup(o->uri);
	nb.size = si.size;
	nb.block_size = r->block_size;
	nb.generation = si.generation ? strdup(si.generation) : NULL;
	nb.changes_number = si.changes_number;
	nb.bitmap = ctx ? strdup(ctx) : NULL;
	nb.blocks = blocks;
	nb.data_blocks = data_blocks;
	nb.read_blocks = l.blocks;
	nb.new_chunks = pw.n_added;
	nb.new_bytes = pw.raw_bytes;
	nb.stored_bytes = pw.stored_bytes;
	nb.index = index;
	index = NULL;
	if (!nb.from || (si.generation && !nb.generation) || (ctx && !nb.bitmap)) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = repo2_commit(r, sc, &nb, (const uint8_t(*)[CHUNK_ID_LEN])map)) < 0)
		goto out;
	num = nb.num;
	{
		const struct repo2_backup *b = &r->b[r->n - 1];

		*result = json_object_new_object();
		json_object_object_add(*result, "backup", json_object_new_int64(num));
		json_object_object_add(*result, "device", json_object_new_string(b->device));
		json_object_object_add(*result, "kind", json_object_new_string(b->full ? "full" : "incremental"));
		json_object_object_add(*result, "reason", json_object_new_string(reason));
		json_object_object_add(*result, "parent", b->parent >= 0 ? json_object_new_int64(b->parent) : NULL);
		json_object_object_add(*result, "from", json_object_new_string(o->uri));
		json_object_object_add(*result, "size", json_object_new_int64((int64_t)b->size));
		json_object_object_add(*result, "block_size", json_object_new_int64(b->block_size));
		json_object_object_add(*result, "generation",
				       b->generation ? json_object_new_string(b->generation) : NULL);
		json_object_object_add(*result, "changes_number",
				       b->changes_number >= 0 ? json_object_new_int64(b->changes_number) : NULL);
		json_object_object_add(*result, "bitmap", b->bitmap ? json_object_new_string(b->bitmap) : NULL);
		json_object_object_add(*result, "blocks", json_object_new_int64((int64_t)b->read_blocks));
		json_object_object_add(*result, "zero_blocks", json_object_new_int64((int64_t)atomic_load(&c.zero_blocks)));
		json_object_object_add(*result, "bytes_read", json_object_new_int64((int64_t)atomic_load(&c.bytes_read)));
		json_object_object_add(*result, "new_chunks", json_object_new_int64((int64_t)b->new_chunks));
		json_object_object_add(*result, "new_bytes", json_object_new_int64((int64_t)b->new_bytes));
		json_object_object_add(*result, "bytes_stored", json_object_new_int64((int64_t)b->stored_bytes));
		json_object_object_add(*result, "seconds", json_object_new_double(bk_seconds() - t0));
	}
out:
	pack_writer_free(&pw);
	repo2_backup_clear(&nb);
	free(c.items);
	free(c.entries2);
	free(map);
	free(ctx);
	free(device);
	free(index);
	block_list_free(&l);
	source_info_free(&si);
	if (h)
		nbd_close(h);
	seal_ctx_free(sc);
	free(ic.reason);
	if (r != o->opened)
		repo2_close(r);
	return err;
}

int backup_run(const struct backup_opts *o, struct json_object **result)
{
	int v;

	if (o->opened)
		return backup2_run(o, result);
	if ((v = repo_version(o->repo)) < 0)
		return v;
	if (v == 1 || (v == 0 && o->repo_version == 1)) {
		if (o->choose || o->device || o->key_file || o->level >= 0) {
			bk_error("%s: a version 1 repository has no --device, --key-file or --compress-level",
				 o->repo);
			return -EINVAL;
		}
		return backup1_run(o, result);
	}
	return backup2_run(o, result);
}
