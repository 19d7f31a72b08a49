/* Diff areas (see diff_area.h).
 *
 * Each chunk is a state byte (not copied / in the storage) and a location.
 * Striped read-write locks order the copy against readers of the image: an
 * image read holds its stripe shared while it reads the origin, so the copy
 * (exclusive) cannot slip between, and the origin write waits for the copy.
 * Lock order everywhere: the origin device's drain lock, then a stripe. */
#include "blksnap/diff_area.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "common/log.h"
#include "core/device.h"
#include "core/extents.h"
#include "core/filter.h"
#include "core/io.h"
#include "blksnap/cbt_map.h"
#include "blksnap/diff_storage.h"
#include "blksnap/event_queue.h"
#include "blksnap/params.h"

#define STRIPES 256
#define CHUNK_FREE 0
#define CHUNK_STORED 1

struct diff_area {
	atomic_int refs;
	struct device *orig;
	struct diff_storage *storage;
	struct event_queue *events;
	void (*owner_put)(void *);
	void *owner;
	uint64_t capacity;
	unsigned chunk_shift;
	uint64_t chunk_count;
	uint8_t *state;
	uint64_t *loc;
	pthread_rwlock_t stripes[STRIPES];
	atomic_int error;
	atomic_bool detached;
	atomic_ullong copied;
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

	if (!da)
		return -ENOMEM;
	da->capacity = device_size(orig);
	diff_area_geometry(p, da->capacity, device_logical_block_size(orig), &da->chunk_shift, &da->chunk_count);
	da->state = calloc(da->chunk_count ? da->chunk_count : 1, 1);
	da->loc = calloc(da->chunk_count ? da->chunk_count : 1, sizeof(*da->loc));
	if (!da->state || !da->loc) {
		free(da->state);
		free(da->loc);
		free(da);
		return -ENOMEM;
	}
	for (int i = 0; i < STRIPES; i++)
		pthread_rwlock_init(&da->stripes[i], NULL);
	atomic_init(&da->refs, 1);
	atomic_init(&da->error, 0);
	atomic_init(&da->detached, false);
	atomic_init(&da->copied, 0);
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
	free(da->state);
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
	return atomic_load(&da->copied);
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

static uint64_t chunk_len(struct diff_area *da, uint64_t chunk)
{
	uint64_t start = chunk << da->chunk_shift, size = 1ull << da->chunk_shift;

	return da->capacity - start < size ? da->capacity - start : size;
}

static bool stored(struct diff_area *da, uint64_t chunk)
{
	return __atomic_load_n(&da->state[chunk], __ATOMIC_ACQUIRE) == CHUNK_STORED;
}

/* With the chunk's stripe held exclusive: copy it from the origin (the layers
 * below the tracker) into the storage. 0, or the error now set on the area. */
static int copy_chunk_locked(struct diff_area *da, struct filter *tracker, uint64_t chunk)
{
	uint64_t len = chunk_len(da, chunk), virt;
	void *buf;
	int r;

	if (stored(da, chunk))
		return 0;
	r = atomic_load(&da->error);
	if (r)
		return r;
	r = diff_storage_alloc(da->storage, len, &virt);
	if (r < 0) {
		set_error(da, -ENOSPC);
		return -ENOSPC;
	}
	buf = malloc(len);
	if (!buf) {
		set_error(da, -ENOMEM);
		return -ENOMEM;
	}
	r = filter_next_pread(tracker, buf, len, chunk << da->chunk_shift, 0);
	if (r == 0)
		r = diff_storage_write(da->storage, virt, buf, len);
	free(buf);
	if (r < 0) {
		set_error(da, -EIO);
		return -EIO;
	}
	da->loc[chunk] = virt;
	__atomic_store_n(&da->state[chunk], CHUNK_STORED, __ATOMIC_RELEASE);
	atomic_fetch_add_explicit(&da->copied, 1, memory_order_relaxed);
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
		if (stored(da, c))
			continue;
		pthread_rwlock_wrlock(stripe(da, c));
		copy_chunk_locked(da, tracker, c);
		pthread_rwlock_unlock(stripe(da, c));
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
		pthread_rwlock_rdlock(stripe(da, c));
		if (stored(da, c))
			r = diff_storage_read(da->storage, da->loc[c] + within, p, n);
		else
			r = filter_next_pread(tracker, p, n, offset, 0);
		pthread_rwlock_unlock(stripe(da, c));
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
	/* The origin's map first, the chunk states after: a chunk not stored
	 * now was not stored when the origin was asked either (chunks are
	 * only ever stored, and before the origin write that follows), so the
	 * origin still held what it held at take. */
	r = filter_next_extents(tracker, count, offset, flags, below);
	for (size_t i = 0; r == 0 && i < extents_count(below) && !extents_done(e); i++) {
		const struct extent *x = extents_get(below, i);
		uint64_t pos = x->offset, end = x->offset + x->length;

		while (r == 0 && pos < end && !extents_done(e)) {
			uint64_t c = pos >> da->chunk_shift;
			uint64_t next = (c + 1) << da->chunk_shift;

			if (next > end)
				next = end;
			r = extents_add(e, pos, next - pos, stored(da, c) ? 0 : x->type);
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
		pthread_rwlock_wrlock(stripe(da, c));
		r = copy_chunk_locked(da, tracker, c);
		if (r == 0)
			r = diff_storage_write(da->storage, da->loc[c] + within, p, n);
		if (r < 0 && r != -ENOSPC)
			set_error(da, -EIO);
		pthread_rwlock_unlock(stripe(da, c));
		p += n;
		offset += n;
		count -= n;
	}
	/* blksnap: an image write is a change the next backup must carry. */
	cbt_map_mark_both(cbt, start, total);
	return r < 0 ? (r == -EINVAL ? r : -EIO) : 0;
}
