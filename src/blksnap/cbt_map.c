/* The CBT map (see cbt_map.h). */
#include "blksnap/cbt_map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/lock_order.h"
#include "core/extents.h"
#include "core/io.h"
#include "blksnap/params.h"

void cbt_map_geometry(const struct params *p, uint64_t capacity, unsigned *shift, uint64_t *count)
{
	unsigned s = p->tracking_block_minimum_shift;
	uint64_t n = (capacity + (1ull << s) - 1) >> s;

	while (n > p->tracking_block_maximum_count && s < p->tracking_block_maximum_shift) {
		s++;
		n = (capacity + (1ull << s) - 1) >> s;
	}
	*shift = s;
	*count = n;
}

static int allocate(struct cbt_map *m, uint64_t capacity, const struct params *p)
{
	unsigned shift;
	uint64_t count;
	uint8_t *r, *w;

	cbt_map_geometry(p, capacity, &shift, &count);
	r = calloc(count ? count : 1, 1);
	w = calloc(count ? count : 1, 1);
	if (!r || !w) {
		free(r);
		free(w);
		return -ENOMEM;
	}
	free(m->read_map);
	free(m->write_map);
	m->read_map = r;
	m->write_map = w;
	m->blk_size_shift = shift;
	m->blk_count = count;
	m->device_capacity = capacity;
	return 0;
}

static int reset_locked(struct cbt_map *m, uint64_t capacity, const struct params *p)
{
	int r = allocate(m, capacity, p);

	if (r < 0)
		return r;
	m->snap_number_active = 1;
	m->snap_number_previous = 0;
	uuid_generate_random(m->generation_id);
	m->is_corrupted = false;
	return 0;
}

int cbt_map_create(struct cbt_map **out, uint64_t capacity, const struct params *p)
{
	struct cbt_map *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	r = reset_locked(m, capacity, p);
	if (r < 0) {
		pthread_mutex_destroy(&m->lock);
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

void cbt_map_destroy(struct cbt_map *m)
{
	if (!m)
		return;
	free(m->read_map);
	free(m->write_map);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

int cbt_map_reset(struct cbt_map *m, uint64_t capacity, const struct params *p)
{
	int r;

	lock_mutex(&m->lock, LOCK_CBT_MAP);
	r = reset_locked(m, capacity, p);
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	return r;
}

/* The data path marks without the lock: a take switches the map only while the
 * device is drained (so never under a mark), and a mark only ever raises a byte
 * to the active number, which concurrent marks agree on. */
int cbt_map_mark(struct cbt_map *m, uint64_t offset, uint64_t count)
{
	uint8_t active = __atomic_load_n(&m->snap_number_active, __ATOMIC_RELAXED);
	uint64_t first, last;

	if (count == 0)
		return 0;
	if (offset >= m->device_capacity || count > m->device_capacity - offset) {
		/* As in blksnap: a write the map cannot describe corrupts it. */
		__atomic_store_n(&m->is_corrupted, true, __ATOMIC_RELAXED);
		return -EINVAL;
	}
	first = offset >> m->blk_size_shift;
	last = (offset + count - 1) >> m->blk_size_shift;
	for (uint64_t i = first; i <= last; i++)
		if (__atomic_load_n(&m->write_map[i], __ATOMIC_RELAXED) < active)
			__atomic_store_n(&m->write_map[i], active, __ATOMIC_RELAXED);
	return 0;
}

int cbt_map_mark_both(struct cbt_map *m, uint64_t offset, uint64_t count)
{
	uint64_t first, last;
	int r = 0;

	if (count == 0)
		return 0;
	lock_mutex(&m->lock, LOCK_CBT_MAP);
	if (offset >= m->device_capacity || count > m->device_capacity - offset) {
		r = -EINVAL;
		goto out;
	}
	first = offset >> m->blk_size_shift;
	last = (offset + count - 1) >> m->blk_size_shift;
	for (uint64_t i = first; i <= last; i++) {
		if (__atomic_load_n(&m->write_map[i], __ATOMIC_RELAXED) < m->snap_number_active)
			__atomic_store_n(&m->write_map[i], m->snap_number_active, __ATOMIC_RELAXED);
		if (m->read_map[i] < m->snap_number_previous)
			m->read_map[i] = m->snap_number_previous;
	}
out:
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	return r;
}

void cbt_map_set_corrupted(struct cbt_map *m)
{
	__atomic_store_n(&m->is_corrupted, true, __ATOMIC_RELAXED);
}

/* The numbers are bytes: the take that would make active 256 starts a new
 * generation instead, as a reset does. blksnap wraps in place (previous 255,
 * active 1 with the new generation), which leaves the first snapshot of the
 * new generation numbered above every later one, so no backup taken from it
 * could ever be followed by an incremental. Here the first snapshot of every
 * generation is number 1, whatever started the generation, and the blocks
 * changed after it are numbered 2 and up. */
int cbt_map_switch(struct cbt_map *m, uint64_t capacity, const struct params *p)
{
	int r = 0;

	lock_mutex(&m->lock, LOCK_CBT_MAP);
	if (m->is_corrupted || m->device_capacity != capacity || m->snap_number_active == UINT8_MAX) {
		r = reset_locked(m, capacity, p);
		if (r < 0) {
			/* Stays (or becomes) corrupted, which its images see; the
			 * next take tries again. */
			__atomic_store_n(&m->is_corrupted, true, __ATOMIC_RELAXED);
			unlock_mutex(&m->lock, LOCK_CBT_MAP);
			return r;
		}
	}
	m->snap_number_previous = m->snap_number_active;
	m->snap_number_active++;
	memcpy(m->read_map, m->write_map, m->blk_count);
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	return 0;
}

uint64_t cbt_map_read(struct cbt_map *m, uint64_t offset, uint64_t len, uint8_t *buf)
{
	uint64_t n = 0;

	lock_mutex(&m->lock, LOCK_CBT_MAP);
	if (offset < m->blk_count) {
		n = m->blk_count - offset < len ? m->blk_count - offset : len;
		memcpy(buf, m->read_map + offset, n);
	}
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	return n;
}

int cbt_map_changed(struct cbt_map *m, uint8_t since, uint64_t offset, uint64_t count,
		    struct extents *e)
{
	uint64_t end, pos = offset, i;
	int r = 0;

	lock_mutex(&m->lock, LOCK_CBT_MAP);
	end = offset + count < m->device_capacity ? offset + count : m->device_capacity;
	i = offset >> m->blk_size_shift;
	while (pos < end && !extents_done(e) && r == 0) {
		bool dirty = m->read_map[i] > since;
		uint64_t j = i + 1, stop;

		while (j < m->blk_count && (j << m->blk_size_shift) < end && (m->read_map[j] > since) == dirty)
			j++;
		stop = (j << m->blk_size_shift) < end ? j << m->blk_size_shift : end;
		r = extents_add(e, pos, stop - pos, dirty ? EXTENT_DIRTY : 0);
		pos = stop;
		i = j;
	}
	unlock_mutex(&m->lock, LOCK_CBT_MAP);
	return r;
}
