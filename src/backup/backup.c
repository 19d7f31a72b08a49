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
#include "backup/util.h"
#include "backup/source.h"
#include "common/io.h"

/* What one reader asks for in one request. */
#define ITEM_BYTES (1u << 20)
/* Requests a reader keeps in flight on its connection, so that the server
 * always has the next one while the reader hashes the last. */
#define READER_DEPTH 4
/* Buffers per reader: its requests', and one the writer empties. */
#define BUFFERS_PER_READER (READER_DEPTH + 1)

struct item {
	uint64_t first, count; /* blocks */
	uint64_t entry;        /* index of its first entry */
};

/* A buffer on its way from a reader to the writer: the blocks of ITEM that
 * are not all zeros, packed, KEPT bytes. */
struct filled {
	char *buf;
	size_t kept;
	const struct item *item;
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
	struct repo_entry *entries;
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

/* ITEM has been read into BUF: hash its blocks, and pack the ones that are
 * not all zeros at its start; their entries get offsets relative to BUF. */
static void pack_item(struct copy *c, const struct item *it, char *buf, size_t *kept)
{
	atomic_fetch_add(&c->bytes_read, item_bytes(c, it));
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
			size_t kept;

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
			pack_item(c, s->item, s->buf, &kept);
			pthread_mutex_lock(&c->lock);
			c->queue[(c->q_head + c->q_len++) % c->q_cap] = (struct filled){ s->buf, kept, s->item };
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

		/* O_DIRECT where the piece allows it: the backup does not pass
		 * through (and push the machine's working set out of) the page
		 * cache, and the copy into it, the writer's largest cost, is gone.
		 * An incremental's scattered small pieces go through the cache. */
		if (atomic_load(&c->err) || f.kept == 0)
			r = 0;
		else
			r = io_pwrite_direct(c->datafd, c->directfd, f.buf, f.kept, c->data_end);
		if (r < 0) {
			bk_error("writing the backup's data: %s", strerror(-r));
			set_error(c, r);
		}
		for (uint64_t i = 0; i < f.item->count; i++)
			if (c->entries[f.item->entry + i].offset != REPO_ZERO_BLOCK)
				c->entries[f.item->entry + i].offset += c->data_end;
		c->data_end += f.kept;
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
	size_t bufs, buf_bytes = ITEM_BYTES > c->block_size ? ITEM_BYTES : c->block_size;
	unsigned n, started = 0;
	int r;

	if ((r = make_items(c, l)) < 0 || !(c->entries = calloc(l->blocks ? l->blocks : 1, sizeof(*c->entries)))) {
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

/* Which context an incremental reads, after checking that the image
 * continues the chain whose last backup is LAST. */
static char *incremental_context(const struct backup_opts *o, const struct backup_info *last,
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
	const struct repo *r;
	const struct backup_info *last;
	char *reason; /* with CHOOSE: why full, or why incremental */
};

/* CHOOSE: the context of an incremental where the export goes on from the
 * chain's last backup, else NULL for a full; either way ic->reason says why
 * (checked in the order a person would ask). */
static char *chosen_context(struct incremental *ic, const struct source_info *si, int *err)
{
	const struct backup_info *last = ic->r->n ? &ic->r->b[ic->r->n - 1] : NULL;
	char *ctx = NULL;

	if (!last)
		ic->reason = strdup(ic->r->created ? "first backup" : "repository empty");
	else if (ic->o->full_reason)
		ic->reason = strdup(ic->o->full_reason);
	else if (last->error)
		ic->reason = bk_format("backup %u is unusable: %s", last->num, last->error);
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
	ic->last = ctx ? last : NULL;
	*err = 0;
	return ctx;
}

static char *choose_context(void *opaque, const struct source_info *si, int *err)
{
	struct incremental *ic = opaque;
	char *ctx;

	if (ic->o->choose)
		return chosen_context(ic, si, err);
	ctx = incremental_context(ic->o, ic->last, si);
	*err = ctx ? 0 : -EINVAL;
	return ctx;
}

int backup_run(const struct backup_opts *o, struct json_object **result)
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
	struct incremental ic = { .o = o };
	bool incremental = o->incremental;
	char *ctx = NULL;
	double t0 = bk_seconds();
	int err;

	if (o->opened)
		r = o->opened;
	else if ((err = repo_open(o->repo, o->incremental ? REPO_WRITE : REPO_CREATE, o->block_size, &r)) < 0)
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
	ic.r = r;
	ic.last = last;
	h = source_open(o->uri, o->tls, &si, o->incremental || o->choose ? choose_context : NULL, &ic, &ctx, &err);
	if (!h)
		goto out;
	if (o->choose) {
		incremental = ctx != NULL;
		last = ic.last;
	}
	/* A snapshot image, or an export nobody can write, holds still while it
	 * is read; a live device does not. (run reads only images it took.) */
	if (!o->choose && !si.generation && nbd_is_read_only(h) == 0)
		fprintf(stderr, "bdfilter-backup: warning: %s is writable and not a snapshot image: "
				"what is written to it meanwhile may be in the backup in part\n",
			o->uri);
	if (o->stop && atomic_load(o->stop)) {
		err = -EINTR;
		goto out;
	}
	err = source_blocks(h, o->uri, ctx ? ctx : LIBNBD_CONTEXT_BASE_ALLOCATION, si.size, r->block_size, &l);
	if (err < 0)
		goto out;
	if ((err = repo_backup_begin(r, &w)) < 0)
		goto out;
	c = (struct copy){ .uri = o->uri, .tls = o->tls, .size = si.size, .block_size = r->block_size, .datafd = w.datafd,
			   .stop = o->stop };
	pg = progress_new(o->show_progress, incremental ? "incremental" : "full",
			  l.blocks * (uint64_t)r->block_size);
	err = copy_blocks(&c, &l, h, o->connections, pg);
	h = NULL; /* copy_blocks closed it */
	progress_done(pg);
	if (err == 0 && o->stop && atomic_load(o->stop))
		err = -EINTR; /* read, but not committed */
	if (err < 0)
		goto out;

	info.full = !incremental;
	info.parent = incremental ? (int)last->num : -1;
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
	if (ic.reason)
		json_object_object_add(*result, "reason", json_object_new_string(ic.reason));
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
	free(ic.reason);
	block_list_free(&l);
	source_info_free(&si);
	if (h)
		nbd_close(h);
	if (r != o->opened)
		repo_close(r);
	return err;
}
