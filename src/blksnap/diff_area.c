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
 * Striped read-write locks order a copy against readers of the image: an
 * image read holds its stripe shared while it reads the origin, so a copy
 * (exclusive) cannot slip between, and the origin write waits for the copy.
 * Lock order everywhere: the origin device's drain lock, then a stripe, then
 * the storage's lock (docs/locking.md). */
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
	pthread_rwlock_t stripes[STRIPES];
	atomic_int error;
	atomic_bool detached;
	atomic_ullong chunks_allocated;
};

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
	da->loc = malloc((da->chunk_count ? da->chunk_count : 1) * sizeof(*da->loc));
	if (!da->copied || !da->loc) {
		free(da->copied);
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
	for (int i = 0; i < STRIPES; i++)
		pthread_rwlock_destroy(&da->stripes[i]);
	device_put(da->orig);
	free(da->copied);
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

/* With the chunk's stripe held exclusive: copy the blocks WANT of CHUNK not
 * copied yet from the origin (the layers below the tracker) into the
 * storage, reserving the chunk's room first if it has none. 0, or the error
 * now set on the area. */
static int copy_blocks_locked(struct diff_area *da, struct filter *tracker, uint64_t chunk, uint64_t want)
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
		void *buf;

		if (!((need >> bit) & 1)) {
			bit++;
			continue;
		}
		run_of(da, chunk, need, bit, &next, &pos, &len);
		if (len == 0)
			break; /* past a short last chunk */
		/* The run's size, not the chunk's: a 256 KiB buffer is an mmap
		 * and a munmap per copy (malloc's threshold is 128 KiB). */
		buf = malloc(len);
		if (!buf) {
			set_error(da, -ENOMEM);
			return -ENOMEM;
		}
		r = filter_next_pread(tracker, buf, len, start + pos, 0);
		if (r == 0)
			r = diff_storage_write(da->storage, da->loc[chunk] + pos, buf, len);
		free(buf);
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
		copy_blocks_locked(da, tracker, c, want);
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
 * the storage where copied, else from the origin. Stripe held shared. */
static int read_chunk_locked(struct diff_area *da, struct filter *tracker, uint64_t chunk, char *p, uint64_t n,
			     uint64_t offset)
{
	uint64_t start = chunk << da->chunk_shift, done = 0, bits = copied(da, chunk);
	int r = 0;

	while (done < n && r == 0) {
		uint64_t pos = offset + done - start, run_pos, run_len, take;
		unsigned bit = (unsigned)(pos >> da->block_shift), next;

		run_of(da, chunk, bits, bit, &next, &run_pos, &run_len);
		take = run_pos + run_len - pos;
		if (take > n - done)
			take = n - done;
		if ((bits >> bit) & 1)
			r = diff_storage_read(da->storage, da->loc[chunk] + pos, p + done, take);
		else
			r = filter_next_pread(tracker, p + done, take, offset + done, 0);
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
		 * write does not cover is the origin's at take. */
		stripe_lock(da, c, true);
		r = copy_blocks_locked(da, tracker, c, blocks_of(da, c, offset, n));
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
