/* full and incremental: decide which blocks to read (the data of the image,
 * or what its dirty bitmap marks since the chain's last backup), read them
 * over several NBD connections at once, and store them in a new backup of
 * the repository: all-zero blocks as index entries only, the others in the
 * data file with their checksums. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/block_list.h"
#include "backup/progress.h"
#include "backup/repo.h"
#include "backup/source.h"

/* What one worker reads in one request. */
#define ITEM_BYTES (4u << 20)

struct item {
	uint64_t first, count; /* blocks */
	uint64_t entry;        /* index of its first entry */
};

struct copy {
	const char *uri;
	uint64_t size;
	uint32_t block_size;
	int datafd;
	struct item *items;
	size_t n_items;
	struct repo_entry *entries;
	atomic_size_t next_item;
	atomic_uint_fast64_t data_end, bytes_read, bytes_done, zero_blocks;
	atomic_int err;
};

static bool all_zero(const char *p, size_t len)
{
	static const char zero[16];

	if (len < 16)
		return memcmp(p, zero, len) == 0;
	return memcmp(p, zero, 16) == 0 && memcmp(p, p + 16, len - 16) == 0;
}

static int pwrite_all(int fd, const char *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t w = pwrite(fd, buf, len, (off_t)off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += w;
		len -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Read ITEM, hash its blocks, append the ones that are not all zeros to the
 * data file in one write, at a place reserved for it. */
static int copy_item(struct copy *c, struct nbd_handle *h, const struct item *it, char *buf)
{
	uint64_t start = it->first * c->block_size;
	uint64_t end = (it->first + it->count) * c->block_size;
	size_t len, kept = 0;
	uint64_t at;
	int r;

	if (end > c->size)
		end = c->size;
	len = (size_t)(end - start);
	if (nbd_pread(h, buf, len, start, 0) < 0) {
		bk_error("%s: reading %zu bytes at %" PRIu64 ": %s", c->uri, len, start, nbd_get_error());
		return -EIO;
	}
	atomic_fetch_add(&c->bytes_read, len);
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
		if (buf + kept != p)
			memmove(buf + kept, p, blen);
		e->offset = kept; /* relative until the place is known */
		kept += blen;
	}
	at = atomic_fetch_add(&c->data_end, kept);
	for (uint64_t i = 0; i < it->count; i++)
		if (c->entries[it->entry + i].offset != REPO_ZERO_BLOCK)
			c->entries[it->entry + i].offset += at;
	r = kept ? pwrite_all(c->datafd, buf, kept, at) : 0;
	if (r < 0) {
		bk_error("writing the backup's data: %s", strerror(-r));
		return r;
	}
	atomic_fetch_add(&c->bytes_done, len);
	return 0;
}

struct worker {
	struct copy *c;
	struct nbd_handle *h;
	pthread_t thread;
};

static void *worker_run(void *opaque)
{
	struct worker *w = opaque;
	struct copy *c = w->c;
	char *buf = malloc(ITEM_BYTES > c->block_size ? ITEM_BYTES : c->block_size);
	size_t i;

	if (!buf) {
		bk_error("out of memory");
		atomic_store(&c->err, -ENOMEM);
		return NULL;
	}
	while (atomic_load(&c->err) == 0 && (i = atomic_fetch_add(&c->next_item, 1)) < c->n_items) {
		int r = copy_item(c, w->h, &c->items[i], buf);

		if (r < 0) {
			int zero = 0;

			atomic_compare_exchange_strong(&c->err, &zero, r);
		}
	}
	free(buf);
	return NULL;
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

/* Read the blocks of L with CONNECTIONS workers (the first on H). */
static int copy_blocks(struct copy *c, const struct block_list *l, struct nbd_handle *h, unsigned connections,
		       struct progress *pg)
{
	struct worker *w;
	unsigned n, started = 0;
	int r;

	if ((r = make_items(c, l)) < 0 || !(c->entries = calloc(l->blocks ? l->blocks : 1, sizeof(*c->entries)))) {
		bk_error("out of memory");
		return -ENOMEM;
	}
	n = connections < c->n_items ? connections : (unsigned)c->n_items;
	if (n == 0)
		return 0;
	w = calloc(n, sizeof(*w));
	if (!w) {
		bk_error("out of memory");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		w[i].c = c;
		w[i].h = i == 0 ? h : source_connect(c->uri, NULL);
		if (!w[i].h) {
			atomic_store(&c->err, -EIO);
			break;
		}
		if (pthread_create(&w[i].thread, NULL, worker_run, &w[i]) != 0) {
			bk_error("cannot start a thread");
			if (i > 0)
				nbd_close(w[i].h);
			atomic_store(&c->err, -EAGAIN);
			break;
		}
		started++;
	}
	while (atomic_load(&c->next_item) < c->n_items && atomic_load(&c->err) == 0 && started == n) {
		progress_update(pg, atomic_load(&c->bytes_done));
		usleep(100000);
	}
	for (unsigned i = 0; i < started; i++) {
		pthread_join(w[i].thread, NULL);
		if (i > 0)
			nbd_close(w[i].h);
	}
	progress_update(pg, atomic_load(&c->bytes_done));
	free(w);
	return atomic_load(&c->err);
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

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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
	char *ctx = NULL;
	double t0 = now_seconds();
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
	/* A first connection tells what the export is; the context to ask for
	 * depends on it, and must be asked for before the handshake ends. */
	if (!(h = source_connect(o->uri, NULL)) || (err = source_info(h, &si)) < 0) {
		err = -EIO;
		goto out;
	}
	if (o->incremental) {
		if (!(ctx = incremental_context(o, last, &si))) {
			err = -EINVAL;
			goto out;
		}
		nbd_close(h);
		if (!(h = source_connect(o->uri, ctx))) {
			err = -ENOENT;
			goto out;
		}
	}
	err = source_blocks(h, o->uri, ctx ? ctx : LIBNBD_CONTEXT_BASE_ALLOCATION, si.size, r->block_size, &l);
	if (err < 0)
		goto out;
	if ((err = repo_backup_begin(r, &w)) < 0)
		goto out;
	c = (struct copy){ .uri = o->uri, .size = si.size, .block_size = r->block_size, .datafd = w.datafd };
	pg = progress_new(o->show_progress, o->incremental ? "incremental" : "full",
			  l.blocks * (uint64_t)r->block_size);
	err = copy_blocks(&c, &l, h, o->connections, pg);
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
	info.bytes_stored = atomic_load(&c.data_end);
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
	json_object_object_add(*result, "seconds", json_object_new_double(now_seconds() - t0));
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
