/* Diff areas (see diff_area.h).
 *
 * The chunk is the unit of allocation, as in blksnap: the first write that
 * touches a chunk reserves its room in the difference storage. What is copied
 * is less: only the blocks of the chunk that a write is about to overwrite
 * (at most 64 per chunk, 4 KiB for the default 256 KiB chunk), each once.
 * A chunk's copied blocks are a bitmap; a block not copied is still the
 * origin's, since every write copies the blocks it touches first. So the
 * first write to a chunk reads 4 KiB from the origin, not 256 KiB, and a
 * backup that reads the image reads each block from wherever it is.
 *
 * A write waits only for the old data to be read (blksnap's pipeline): the
 * blocks read go into a buffer that is queued for the area's writer thread,
 * which stores them in the difference storage, and until it has, readers of
 * the image read them from the buffer. The queue holds at most
 * chunk_maximum_in_queue buffers; when it is full, the copier stores its
 * blocks itself.
 *
 * Striped read-write locks order a copy against readers of the image: an
 * image read holds its stripe shared while it reads the origin or a queued
 * buffer, so a copy (exclusive) cannot slip between, and the origin write
 * waits for the copy. A stripe also guards its chunks' queued buffers (the
 * list of them is per stripe). Lock order everywhere: the origin device's
 * drain lock, then a stripe, then the queue's lock or the storage's
 * (docs/locking.md). */
#include "blksnap/diff_area.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "blksnap/cbt_map.h"
#include "blksnap/diff_storage.h"
#include "blksnap/event_queue.h"
#include "blksnap/params.h"
#include "common/lock_order.h"
#include "common/log.h"
#include "core/device.h"
#include "core/extents.h"
#include "core/filter.h"
#include "core/io.h"

#define STRIPES 256
#define BLOCKS_PER_CHUNK 64
#define MIN_BLOCK_SHIFT 12 /* 4 KiB: the page, and what file systems write */
#define NOT_ALLOCATED UINT64_MAX

/* Blocks read from the origin, waiting in the queue to be stored. */
struct pending {
	struct pending *next;        /* the queue, oldest first */
	struct pending *stripe_next; /* its stripe's list: under the stripe */
	uint64_t chunk;
	uint64_t bits;     /* its blocks */
	uint64_t pos, len; /* bytes within the chunk */
	char data[];
};

struct diff_area {
	atomic_int refs;
	struct device *orig;
	struct diff_storage *storage;
	struct event_queue *events;
	void (*owner_put)(void *);
	void *owner;
	uint64_t capacity;
	unsigned chunk_shift;
	unsigned block_shift; /* what is copied at a time: a chunk's 1/64th, 4 KiB at least */
	uint64_t chunk_count;
	/* Per chunk: the copied blocks, and where the chunk's room is (set
	 * before the first bit, under the stripe held exclusive). */
	_Atomic uint64_t *copied;
	uint64_t *loc;
	/* Per chunk: the copied blocks still in a queued buffer (under the
	 * stripe), and per stripe those buffers. */
	uint64_t *pending_bits;
	struct pending *pending[STRIPES];
	pthread_rwlock_t stripes[STRIPES];
	/* The queue and its writer. in_flight: taken off the queue and not
	 * stored and retired yet. */
	pthread_mutex_t q_lock;
	pthread_cond_t q_cond;
	struct pending *q_head, **q_tail;
	unsigned q_len, q_max, in_flight;
	bool q_stop;
	/* Buffers of a chunk's size, for reuse (free_diff_buffer_pool_size of
	 * them at most): a fresh one of 256 KiB is a mapping whose pages fault
	 * in as the copy fills them, which cost more than the copy itself. */
	struct pending *pool;
	unsigned pool_n, pool_max;
	pthread_t writer;
	bool writer_running;
	atomic_int error;
	atomic_bool detached;
	atomic_ullong chunks_allocated;
};

static void *writer_thread(void *arg);

void diff_area_geometry(const struct params *p, uint64_t capacity, uint32_t min_io, unsigned *shift,
			uint64_t *count)
{
	unsigned s = p->chunk_minimum_shift;
	uint64_t n = (capacity + (1ull << s) - 1) >> s;
	uint64_t max_count = p->chunk_maximum_count_shift >= 64 ? UINT64_MAX : 1ull << p->chunk_maximum_count_shift;

	while ((n > max_count || (1ull << s) < min_io) && s < p->chunk_maximum_shift) {
		s++;
		n = (capacity + (1ull << s) - 1) >> s;
	}
	*shift = s;
	*count = n;
}

int diff_area_new(struct device *orig, const struct params *p, struct diff_storage *storage,
		  struct event_queue *events, void (*owner_put)(void *), void *owner,
		  struct diff_area **out)
{
	struct diff_area *da = calloc(1, sizeof(*da));
	unsigned min_block = MIN_BLOCK_SHIFT;

	if (!da)
		return -ENOMEM;
	da->capacity = device_size(orig);
	diff_area_geometry(p, da->capacity, device_logical_block_size(orig), &da->chunk_shift, &da->chunk_count);
	while ((1u << min_block) < device_logical_block_size(orig))
		min_block++;
	da->block_shift = da->chunk_shift > 6 ? da->chunk_shift - 6 : 0;
	if (da->block_shift < min_block)
		da->block_shift = min_block < da->chunk_shift ? min_block : da->chunk_shift;
	da->copied = calloc(da->chunk_count ? da->chunk_count : 1, sizeof(*da->copied));
	da->pending_bits = calloc(da->chunk_count ? da->chunk_count : 1, sizeof(*da->pending_bits));
	da->loc = malloc((da->chunk_count ? da->chunk_count : 1) * sizeof(*da->loc));
	if (!da->copied || !da->pending_bits || !da->loc) {
		free(da->copied);
		free(da->pending_bits);
		free(da->loc);
		free(da);
		return -ENOMEM;
	}
	for (uint64_t c = 0; c < da->chunk_count; c++)
		da->loc[c] = NOT_ALLOCATED;
	for (int i = 0; i < STRIPES; i++)
		pthread_rwlock_init(&da->stripes[i], NULL);
	atomic_init(&da->refs, 1);
	atomic_init(&da->error, 0);
	atomic_init(&da->detached, false);
	atomic_init(&da->chunks_allocated, 0);
	da->orig = device_get(orig);
	da->storage = storage;
	da->events = events;
	da->owner_put = owner_put;
	da->owner = owner;
	pthread_mutex_init(&da->q_lock, NULL);
	pthread_cond_init(&da->q_cond, NULL);
	da->q_tail = &da->q_head;
	da->q_max = p->chunk_maximum_in_queue;
	da->pool_max = p->free_diff_buffer_pool_size;
	/* Without its thread the area stores every copy itself. */
	da->writer_running = pthread_create(&da->writer, NULL, writer_thread, da) == 0;
	if (!da->writer_running)
		da->q_max = 0;
	*out = da;
	return 0;
}

struct diff_area *diff_area_get(struct diff_area *da)
{
	atomic_fetch_add(&da->refs, 1);
	return da;
}

void diff_area_put(struct diff_area *da)
{
	if (!da || atomic_fetch_sub(&da->refs, 1) != 1)
		return;
	/* The writer stores what is queued, then goes: the storage is there
	 * until the owner's put, below. */
	lock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	da->q_stop = true;
	pthread_cond_broadcast(&da->q_cond);
	unlock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	if (da->writer_running)
		pthread_join(da->writer, NULL);
	while (da->pool) {
		struct pending *b = da->pool;

		da->pool = b->next;
		free(b);
	}
	pthread_cond_destroy(&da->q_cond);
	pthread_mutex_destroy(&da->q_lock);
	for (int i = 0; i < STRIPES; i++)
		pthread_rwlock_destroy(&da->stripes[i]);
	device_put(da->orig);
	free(da->copied);
	free(da->pending_bits);
	free(da->loc);
	if (da->owner_put)
		da->owner_put(da->owner);
	free(da);
}

int diff_area_error(struct diff_area *da)
{
	return atomic_load(&da->error);
}

void diff_area_detach(struct diff_area *da)
{
	atomic_store(&da->detached, true);
}

bool diff_area_detached(struct diff_area *da)
{
	return atomic_load(&da->detached);
}

uint64_t diff_area_capacity(struct diff_area *da)
{
	return da->capacity;
}

struct device *diff_area_origin(struct diff_area *da)
{
	return da->orig;
}

struct diff_storage *diff_area_storage(struct diff_area *da)
{
	return da->storage;
}

uint64_t diff_area_copied(struct diff_area *da)
{
	return atomic_load(&da->chunks_allocated);
}

/* The first failure corrupts the image for good and queues one event. */
static void set_error(struct diff_area *da, int err)
{
	int expected = 0;
	struct event ev = { .code = EVENT_CORRUPTED };
	struct stat st;

	if (!atomic_compare_exchange_strong(&da->error, &expected, err))
		return;
	log_warn("%s: snapshot image corrupted: %s", device_name(da->orig), strerror(-err));
	if (stat(device_path(da->orig), &st) == 0 && S_ISBLK(st.st_mode)) {
		ev.corrupted.dev_id_mj = major(st.st_rdev);
		ev.corrupted.dev_id_mn = minor(st.st_rdev);
	}
	ev.corrupted.err_code = err;
	strncpy(ev.corrupted.device, device_name(da->orig), sizeof(ev.corrupted.device) - 1);
	event_queue_push(da->events, &ev);
}

static pthread_rwlock_t *stripe(struct diff_area *da, uint64_t chunk)
{
	return &da->stripes[chunk % STRIPES];
}

static void stripe_lock(struct diff_area *da, uint64_t chunk, bool exclusive)
{
	lock_order_acquire(LOCK_STRIPE, false);
	if (exclusive)
		pthread_rwlock_wrlock(stripe(da, chunk));
	else
		pthread_rwlock_rdlock(stripe(da, chunk));
}

static void stripe_unlock(struct diff_area *da, uint64_t chunk)
{
	pthread_rwlock_unlock(stripe(da, chunk));
	lock_order_release(LOCK_STRIPE);
}

static uint64_t chunk_len(struct diff_area *da, uint64_t chunk)
{
	uint64_t start = chunk << da->chunk_shift, size = 1ull << da->chunk_shift;

	return da->capacity - start < size ? da->capacity - start : size;
}

/* The blocks of CHUNK that [offset, offset+count) touches (it must touch
 * the chunk). */
static uint64_t blocks_of(struct diff_area *da, uint64_t chunk, uint64_t offset, uint64_t count)
{
	uint64_t start = chunk << da->chunk_shift, end = start + chunk_len(da, chunk);
	uint64_t first, last;

	if (offset < start) {
		count -= start - offset;
		offset = start;
	}
	if (count > end - offset)
		count = end - offset;
	first = (offset - start) >> da->block_shift;
	last = (offset - start + count - 1) >> da->block_shift;
	return (last - first == 63 ? ~0ull : ((1ull << (last - first + 1)) - 1)) << first;
}

static uint64_t copied(struct diff_area *da, uint64_t chunk)
{
	return atomic_load_explicit(&da->copied[chunk], memory_order_acquire);
}

/* Bytes [*pos, *pos+*len) within CHUNK of the run of equal bits of MASK that
 * starts at bit FIRST; the bit after it in *NEXT. */
static void run_of(struct diff_area *da, uint64_t chunk, uint64_t mask, unsigned first, unsigned *next,
		   uint64_t *pos, uint64_t *len)
{
	bool set = (mask >> first) & 1;
	unsigned k = first + 1;
	uint64_t clen = chunk_len(da, chunk);

	while (k < BLOCKS_PER_CHUNK && ((mask >> k) & 1) == set && ((uint64_t)k << da->block_shift) < clen)
		k++;
	*next = k;
	*pos = (uint64_t)first << da->block_shift;
	*len = ((uint64_t)k << da->block_shift) - *pos;
	if (*pos + *len > clen)
		*len = clen - *pos;
}

/* The bits of the blocks in [pos, pos+len) of a chunk. */
static uint64_t bits_of_run(struct diff_area *da, uint64_t pos, uint64_t len)
{
	unsigned first = (unsigned)(pos >> da->block_shift);
	unsigned n = (unsigned)((len + (1ull << da->block_shift) - 1) >> da->block_shift);

	return (n >= 64 ? ~0ull : ((1ull << n) - 1)) << first;
}

/* A buffer for a copy: from the pool, or new. */
static struct pending *buffer_get(struct diff_area *da)
{
	struct pending *b;

	lock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	b = da->pool;
	if (b) {
		da->pool = b->next;
		da->pool_n--;
	}
	unlock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	return b ? b : malloc(sizeof(*b) + (1ull << da->chunk_shift));
}

static void buffer_put(struct diff_area *da, struct pending *b)
{
	if (!b)
		return;
	lock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	if (da->pool_n < da->pool_max) {
		b->next = da->pool;
		da->pool = b;
		da->pool_n++;
		b = NULL;
	}
	unlock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	free(b);
}

/* Queue P (its chunk's stripe held exclusive): false if the queue is full
 * or stopping, and the caller stores P itself. */
static bool queue_locked(struct diff_area *da, struct pending *p)
{
	bool queued = false;

	lock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	if (!da->q_stop && da->q_len < da->q_max) {
		p->next = NULL;
		*da->q_tail = p;
		da->q_tail = &p->next;
		da->q_len++;
		pthread_cond_broadcast(&da->q_cond);
		queued = true;
	}
	unlock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	if (queued) {
		/* Readers find it from now on (the writer, which takes the
		 * stripe to retire it, cannot before we let go). */
		p->stripe_next = da->pending[p->chunk % STRIPES];
		da->pending[p->chunk % STRIPES] = p;
		da->pending_bits[p->chunk] |= p->bits;
	}
	return queued;
}

/* The writer: stores each queued buffer, then retires it under its stripe,
 * so that readers turn to the storage. A failure corrupts the image. */
static void *writer_thread(void *arg)
{
	struct diff_area *da = arg;

	for (;;) {
		struct pending *p;

		lock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
		while (!da->q_head && !da->q_stop)
			pthread_cond_wait(&da->q_cond, &da->q_lock);
		p = da->q_head;
		if (p) {
			da->q_head = p->next;
			if (!da->q_head)
				da->q_tail = &da->q_head;
			da->q_len--;
			da->in_flight++;
		}
		unlock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
		if (!p)
			break; /* stopping, and nothing left */

		if (!atomic_load(&da->error) &&
		    diff_storage_write(da->storage, da->loc[p->chunk] + p->pos, p->data, p->len) < 0)
			set_error(da, -EIO);

		stripe_lock(da, p->chunk, true);
		for (struct pending **pp = &da->pending[p->chunk % STRIPES]; *pp; pp = &(*pp)->stripe_next)
			if (*pp == p) {
				*pp = p->stripe_next;
				break;
			}
		da->pending_bits[p->chunk] &= ~p->bits;
		stripe_unlock(da, p->chunk);
		buffer_put(da, p);

		lock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
		da->in_flight--;
		pthread_cond_broadcast(&da->q_cond);
		unlock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	}
	return NULL;
}

/* Wait until every queued buffer is stored (no stripe held). */
static void drain_queue(struct diff_area *da)
{
	lock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
	while (da->q_head || da->in_flight)
		pthread_cond_wait(&da->q_cond, &da->q_lock);
	unlock_mutex(&da->q_lock, LOCK_STORE_QUEUE);
}

void diff_area_drain(struct diff_area *da)
{
	drain_queue(da);
}

/* With the chunk's stripe held exclusive: copy the blocks WANT of CHUNK not
 * copied yet from the origin (the layers below the tracker), reserving the
 * chunk's room in the storage first if it has none; the blocks read are
 * queued for the writer (with MAY_QUEUE, and room in the queue) or stored
 * here. 0, or the error now set on the area. */
static int copy_blocks_locked(struct diff_area *da, struct filter *tracker, uint64_t chunk, uint64_t want,
			      bool may_queue)
{
	uint64_t need = want & ~copied(da, chunk), start = chunk << da->chunk_shift;
	unsigned bit = 0, next;
	int r;

	if (!need)
		return 0;
	r = atomic_load(&da->error);
	if (r)
		return r;
	if (da->loc[chunk] == NOT_ALLOCATED) {
		uint64_t virt;

		if (diff_storage_alloc(da->storage, chunk_len(da, chunk), &virt) < 0) {
			set_error(da, -ENOSPC);
			return -ENOSPC;
		}
		da->loc[chunk] = virt;
		atomic_fetch_add_explicit(&da->chunks_allocated, 1, memory_order_relaxed);
	}
	while (bit < BLOCKS_PER_CHUNK && r == 0) {
		uint64_t pos, len;
		struct pending *p;

		if (!((need >> bit) & 1)) {
			bit++;
			continue;
		}
		run_of(da, chunk, need, bit, &next, &pos, &len);
		if (len == 0)
			break; /* past a short last chunk */
		p = buffer_get(da);
		if (!p) {
			set_error(da, -ENOMEM);
			return -ENOMEM;
		}
		p->chunk = chunk;
		p->bits = bits_of_run(da, pos, len);
		p->pos = pos;
		p->len = len;
		r = filter_next_pread(tracker, p->data, len, start + pos, 0);
		if (r == 0 && may_queue && queue_locked(da, p))
			p = NULL;
		else if (r == 0)
			r = diff_storage_write(da->storage, da->loc[chunk] + pos, p->data, len);
		buffer_put(da, p);
		bit = next;
	}
	if (r < 0) {
		set_error(da, -EIO);
		return -EIO;
	}
	atomic_fetch_or_explicit(&da->copied[chunk], need, memory_order_release);
	return 0;
}

void diff_area_cow(struct diff_area *da, struct filter *tracker, uint64_t offset, uint64_t count)
{
	uint64_t first, last;

	if (count == 0 || atomic_load_explicit(&da->error, memory_order_relaxed))
		return;
	first = offset >> da->chunk_shift;
	last = (offset + count - 1) >> da->chunk_shift;
	for (uint64_t c = first; c <= last && c < da->chunk_count; c++) {
		uint64_t want = blocks_of(da, c, offset, count);

		if ((copied(da, c) & want) == want)
			continue;
		stripe_lock(da, c, true);
		copy_blocks_locked(da, tracker, c, want, true);
		stripe_unlock(da, c);
		if (atomic_load_explicit(&da->error, memory_order_relaxed))
			return; /* corrupted: the origin write goes on without copies */
	}
}

static int check_image(struct diff_area *da, uint64_t count, uint64_t offset)
{
	if (atomic_load(&da->detached))
		return -EIO;
	if (atomic_load(&da->error))
		return -EIO;
	if (offset > da->capacity || count > da->capacity - offset)
		return -EINVAL;
	return 0;
}

/* Read [offset, offset+n) of one chunk of the image: each run of blocks from
 * the origin where not copied, from a queued buffer where the copy waits to
 * be stored, else from the storage. Stripe held shared. */
static int read_chunk_locked(struct diff_area *da, struct filter *tracker, uint64_t chunk, char *p, uint64_t n,
			     uint64_t offset)
{
	uint64_t start = chunk << da->chunk_shift, done = 0;
	uint64_t cbits = copied(da, chunk), pbits = da->pending_bits[chunk];
	int r = 0;

	while (done < n && r == 0) {
		uint64_t pos = offset + done - start, run_pos, run_len, take;
		unsigned bit = (unsigned)(pos >> da->block_shift), next;
		struct pending *q = NULL;

		if (((cbits & pbits) >> bit) & 1) {
			for (q = da->pending[chunk % STRIPES]; q; q = q->stripe_next)
				if (q->chunk == chunk && ((q->bits >> bit) & 1))
					break;
			if (!q)
				return -EIO; /* a pending bit with no buffer: a bug */
			run_pos = q->pos;
			run_len = q->len;
		} else {
			run_of(da, chunk, (cbits >> bit) & 1 ? cbits & ~pbits : cbits, bit, &next, &run_pos, &run_len);
		}
		take = run_pos + run_len - pos;
		if (take > n - done)
			take = n - done;
		if (q) {
			memcpy(p + done, q->data + (pos - q->pos), take);
		} else if ((cbits >> bit) & 1) {
			r = diff_storage_read(da->storage, da->loc[chunk] + pos, p + done, take);
			/* As in blksnap, a copy that cannot be loaded back
			 * corrupts the image: the storage is not trusted any
			 * more, and a backup reading on must fail, not go on. */
			if (r < 0)
				set_error(da, -EIO);
		} else {
			r = filter_next_pread(tracker, p + done, take, offset + done, 0);
		}
		done += take;
	}
	return r;
}

int diff_area_image_read(struct diff_area *da, struct filter *tracker, void *buf, uint64_t count,
			 uint64_t offset)
{
	char *p = buf;
	int r = check_image(da, count, offset);

	while (r == 0 && count > 0) {
		uint64_t c = offset >> da->chunk_shift;
		uint64_t within = offset - (c << da->chunk_shift);
		uint64_t n = chunk_len(da, c) - within;

		if (n > count)
			n = count;
		stripe_lock(da, c, false);
		r = read_chunk_locked(da, tracker, c, p, n, offset);
		stripe_unlock(da, c);
		if (r == 0 && atomic_load(&da->error))
			r = -EIO; /* corrupted while we read: do not hand out a mix */
		p += n;
		offset += n;
		count -= n;
	}
	return r < 0 ? (r == -EINVAL ? r : -EIO) : 0;
}

int diff_area_image_extents(struct diff_area *da, struct filter *tracker, uint64_t count, uint64_t offset,
			    uint32_t flags, struct extents *e)
{
	struct extents *below;
	int r = check_image(da, count, offset);

	if (r < 0)
		return r;
	below = extents_new(offset, offset + count, 1024);
	if (!below)
		return -ENOMEM;
	/* The origin's map first, the copied blocks after: a block not copied
	 * now was not copied when the origin was asked either (blocks are only
	 * ever copied, and before the origin write that follows), so the
	 * origin still held what it held at take. */
	r = filter_next_extents(tracker, count, offset, flags, below);
	for (size_t i = 0; r == 0 && i < extents_count(below) && !extents_done(e); i++) {
		const struct extent *x = extents_get(below, i);
		uint64_t pos = x->offset, end = x->offset + x->length;

		while (r == 0 && pos < end && !extents_done(e)) {
			uint64_t c = pos >> da->chunk_shift, start = c << da->chunk_shift;
			unsigned bit = (unsigned)((pos - start) >> da->block_shift);
			uint64_t next = start + ((uint64_t)(bit + 1) << da->block_shift);
			bool is_copied = (copied(da, c) >> bit) & 1;

			if (next > end)
				next = end;
			r = extents_add(e, pos, next - pos, is_copied ? 0 : x->type);
			pos = next;
		}
	}
	extents_free(below);
	if (r == 0 && atomic_load(&da->error))
		r = -EIO;
	return r;
}

int diff_area_image_write(struct diff_area *da, struct filter *tracker, struct cbt_map *cbt,
			  const void *buf, uint64_t count, uint64_t offset)
{
	const char *p = buf;
	uint64_t start = offset, total = count;
	int r = check_image(da, count, offset);

	while (r == 0 && count > 0) {
		uint64_t c = offset >> da->chunk_shift;
		uint64_t within = offset - (c << da->chunk_shift);
		uint64_t n = chunk_len(da, c) - within;

		if (n > count)
			n = count;
		/* The blocks it touches are copied first, so that what the
		 * write does not cover is the origin's at take; and stored, not
		 * queued: a queued copy stored after this write would undo it. */
		stripe_lock(da, c, true);
		while (da->pending_bits[c] & blocks_of(da, c, offset, n)) {
			stripe_unlock(da, c);
			drain_queue(da);
			stripe_lock(da, c, true);
		}
		r = copy_blocks_locked(da, tracker, c, blocks_of(da, c, offset, n), false);
		if (r == 0)
			r = diff_storage_write(da->storage, da->loc[c] + within, p, n);
		if (r < 0 && r != -ENOSPC)
			set_error(da, -EIO);
		stripe_unlock(da, c);
		p += n;
		offset += n;
		count -= n;
	}
	/* blksnap: an image write is a change the next backup must carry. */
	cbt_map_mark_both(cbt, start, total);
	return r < 0 ? (r == -EINVAL ? r : -EIO) : 0;
}
