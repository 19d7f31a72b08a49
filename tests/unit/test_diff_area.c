/* Unit tests: copy-before-write (blksnap/diff_area.c) and the difference
 * storage (blksnap/diff_storage.c) over fake stores in memory that can pause
 * and fail in the middle of an operation: an origin device with a tracker, a
 * diff area armed on it as a take arms it, and its image.
 *
 * What must hold (the design's invariant 2): the image reads, sector for
 * sector, what the origin held when the area was armed, under concurrent
 * writers and readers, while copies are in flight, when the storage
 * overflows or fails in the middle (then the image fails with EIO, and is
 * never silently wrong), and when the snapshot goes while copies run; the
 * origin's writes never fail for any of it. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "blksnap/blksnap.h"
#include "blksnap/diff_area.h"
#include "blksnap/diff_storage.h"
#include "blksnap/event_queue.h"
#include "blksnap/image.h"
#include "blksnap/params.h"
#include "blksnap/tracker.h"
#include "common/log.h"
#include "core/backing.h"
#include "core/device.h"
#include "core/registry.h"
#include "core/store_id.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)
#define SECTOR 512u

/* ---- a store in memory that pauses and fails on request ---- */

struct fake {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint8_t *data;
	uint64_t size;
	bool pause_writes;     /* writers wait in pwrite until it is cleared */
	unsigned paused;       /* writers waiting now */
	int fail_reads;        /* errno for every read from now on, or 0 */
	int fail_writes;       /* errno for writes once writes_ok have passed */
	unsigned writes_ok;
	uint64_t bytes_written;
};

static struct fake *fake_new(uint64_t size)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->data = calloc(1, size);
	assert_non_null(f->data);
	f->size = size;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	return f;
}

static int fake_pread(void *priv, void *buf, uint64_t count, uint64_t offset)
{
	struct fake *f = priv;
	int r = 0;

	pthread_mutex_lock(&f->lock);
	if (f->fail_reads)
		r = -f->fail_reads;
	else if (offset + count > f->size)
		r = -EIO;
	else
		memcpy(buf, f->data + offset, count);
	pthread_mutex_unlock(&f->lock);
	return r;
}

static int fake_pwrite(void *priv, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	struct fake *f = priv;
	int r = 0;

	pthread_mutex_lock(&f->lock);
	while (f->pause_writes) {
		f->paused++;
		pthread_cond_broadcast(&f->cond);
		pthread_cond_wait(&f->cond, &f->lock);
		f->paused--;
	}
	if (f->fail_writes && f->writes_ok == 0)
		r = -f->fail_writes;
	else if (offset + count > f->size)
		r = -EIO;
	if (r == 0) {
		if (f->writes_ok)
			f->writes_ok--;
		memcpy(f->data + offset, buf, count);
		f->bytes_written += count;
	}
	pthread_mutex_unlock(&f->lock);
	return r;
}

/* Wait until N writers are paused in F. */
static void fake_wait_paused(struct fake *f, unsigned n)
{
	pthread_mutex_lock(&f->lock);
	while (f->paused < n)
		pthread_cond_wait(&f->cond, &f->lock);
	pthread_mutex_unlock(&f->lock);
}

static void fake_release(struct fake *f)
{
	pthread_mutex_lock(&f->lock);
	f->pause_writes = false;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

static void fake_close(void *priv)
{
	struct fake *f = priv;

	free(f->data);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static const struct backing_ops fake_ops = {
	.pread = fake_pread,
	.pwrite = fake_pwrite,
	.close = fake_close,
};

/* ---- an origin with a tracker, a storage, an armed diff area ---- */

struct fixture {
	struct params params;
	struct registry *reg;
	struct blksnap bs;
	struct fake *origin, *store;
	struct device *dev, *img;
	struct event_queue events;
	struct diff_storage *ds;
	struct diff_area *da;
	uint8_t *at_take; /* the origin when the area was armed */
	uint64_t size;
};

/* Every sector holds its LBA and GEN, so that a sector from the wrong place
 * or the wrong time is seen. */
static void stamp(uint8_t *p, uint64_t lba, uint64_t gen)
{
	for (unsigned i = 0; i < SECTOR; i += 16) {
		memcpy(p + i, &lba, 8);
		memcpy(p + i + 8, &gen, 8);
	}
}

static void setup_with(struct fixture *f, uint64_t size, uint64_t storage, unsigned queue)
{
	struct backing *ob, *sb;
	struct ds_file *file;
	struct byte_range all = { 0, storage };

	log_set_level(LOG_LEVEL_ERROR);
	f->size = size;
	params_defaults(&f->params);
	if (queue)
		f->params.chunk_maximum_in_queue = queue;
	assert_int_equal(registry_new(&f->reg), 0);
	blksnap_init(&f->bs, &f->params, f->reg);
	f->origin = fake_new(size);
	for (uint64_t lba = 0; lba < size / SECTOR; lba++)
		stamp(f->origin->data + lba * SECTOR, lba, 0);
	f->at_take = malloc(size);
	memcpy(f->at_take, f->origin->data, size);
	assert_int_equal(backing_new_custom(&fake_ops, f->origin, size, "origin", &ob), 0);
	assert_int_equal(device_new("o", ob, false, &f->dev), 0);
	assert_int_equal(device_attach(f->dev, &tracker_filter_ops, &f->bs), 0);

	event_queue_init(&f->events);
	assert_int_equal(diff_storage_new(&f->params, &f->events, &f->ds), 0);
	f->store = fake_new(storage);
	assert_int_equal(backing_new_custom(&fake_ops, f->store, storage, "storage", &sb), 0);
	assert_int_equal(ds_file_wrap(sb, &file), 0);
	assert_int_equal(diff_storage_append(f->ds, file, &all, 1), 0);

	/* as a take arms it */
	assert_int_equal(diff_area_new(f->dev, &f->params, f->ds, &f->events, NULL, NULL, &f->da), 0);
	device_quiesce(f->dev);
	tracker_set_diff_area(tracker_of_quiesced(f->dev), f->da);
	device_resume(f->dev);
	assert_int_equal(image_device_new("o-image", f->da, &f->img), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	setup_with(f, 16 * MIB, 32 * MIB, 0);
	*state = f;
	return 0;
}

/* A queue of one: copiers mostly store their copies themselves. */
static int setup_small_queue(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	setup_with(f, 16 * MIB, 32 * MIB, 1);
	*state = f;
	return 0;
}

/* As a destroy tears the area down (snapshot.c's destroy_locked). */
static void disarm(struct fixture *f)
{
	diff_area_detach(f->da);
	device_quiesce(f->dev);
	tracker_set_diff_area(tracker_of_quiesced(f->dev), NULL);
	device_resume(f->dev);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	bool detached = diff_area_detached(f->da);

	device_put(f->img); /* before the disarm, as a destroy does: its flush works */
	if (!detached)
		disarm(f);
	diff_area_put(f->da);
	device_put(f->dev);
	diff_storage_free(f->ds);
	event_queue_close(&f->events);
	event_queue_destroy(&f->events);
	blksnap_fini(&f->bs);
	registry_free(f->reg);
	free(f->at_take);
	free(f);
	return 0;
}

/* Write COUNT bytes at OFFSET on the origin, each sector stamped with GEN. */
static int write_stamped(struct fixture *f, uint64_t offset, uint64_t count, uint64_t gen)
{
	uint8_t *buf = malloc(count);
	int r;

	for (uint64_t i = 0; i < count / SECTOR; i++)
		stamp(buf + i * SECTOR, offset / SECTOR + i, gen);
	r = device_pwrite(f->dev, buf, count, offset, 0);
	free(buf);
	return r;
}

/* The image at [offset, offset+count) is what the origin held at take. */
static void assert_image(struct fixture *f, uint64_t offset, uint64_t count)
{
	uint8_t *buf = malloc(count);

	assert_int_equal(device_pread(f->img, buf, count, offset, 0), 0);
	assert_memory_equal(buf, f->at_take + offset, count);
	free(buf);
}

/* ---- the tests ---- */

/* A 512-byte write copies its 4 KiB block, not the 256 KiB chunk; the chunk
 * gets its room; the image reads the copied block from the storage and the
 * rest of the chunk from the origin. */
static void a_write_copies_only_its_blocks(void **state)
{
	struct fixture *f = *state;
	struct diff_storage_stats st;

	assert_int_equal(write_stamped(f, 256 * KIB + 4096 + 512, 512, 1), 0);
	diff_area_drain(f->da);
	assert_int_equal(f->store->bytes_written, 4096);
	diff_storage_stats(f->ds, &st);
	assert_int_equal(st.used, 256 * KIB); /* the chunk is the unit of allocation */
	assert_int_equal(diff_area_copied(f->da), 1);
	/* a write across two blocks of the same chunk copies the second only */
	assert_int_equal(write_stamped(f, 256 * KIB + 4096 + 3584, 1024, 2), 0);
	diff_area_drain(f->da);
	assert_int_equal(f->store->bytes_written, 8192);
	/* a write across a chunk boundary: a block on each side */
	assert_int_equal(write_stamped(f, 512 * KIB - 512, 1024, 3), 0);
	diff_area_drain(f->da);
	assert_int_equal(f->store->bytes_written, 16384);
	assert_int_equal(diff_area_copied(f->da), 2);
	assert_image(f, 0, f->size);
	assert_int_equal(diff_area_error(f->da), 0);
}

struct load {
	struct fixture *f;
	unsigned seed;
	unsigned rounds;
	uint64_t gen;
	int errors;
};

static void *writer(void *arg)
{
	struct load *l = arg;

	for (unsigned i = 0; i < l->rounds; i++) {
		uint64_t count = ((uint64_t)(rand_r(&l->seed) % 128) + 1) * SECTOR;
		uint64_t offset = (uint64_t)(rand_r(&l->seed) % (unsigned)((l->f->size - count) / SECTOR)) * SECTOR;

		if (write_stamped(l->f, offset, count, l->gen) < 0)
			l->errors++;
	}
	return NULL;
}

static void *reader(void *arg)
{
	struct load *l = arg;
	uint8_t *buf = malloc(256 * KIB);

	for (unsigned i = 0; i < l->rounds; i++) {
		uint64_t count = ((uint64_t)(rand_r(&l->seed) % 512) + 1) * SECTOR;
		uint64_t offset = (uint64_t)(rand_r(&l->seed) % (unsigned)((l->f->size - count) / SECTOR)) * SECTOR;

		if (device_pread(l->f->img, buf, count, offset, 0) < 0 ||
		    memcmp(buf, l->f->at_take + offset, count) != 0)
			l->errors++;
	}
	free(buf);
	return NULL;
}

/* Writers on the origin and readers of the image at once: every read of the
 * image is the origin at take, every write lands. */
static void concurrent_writers_and_readers(void **state)
{
	struct fixture *f = *state;
	struct load loads[8];
	pthread_t t[8];

	for (int i = 0; i < 8; i++) {
		loads[i] = (struct load){ .f = f, .seed = 1000 + i, .rounds = 400, .gen = 10 + i };
		assert_int_equal(pthread_create(&t[i], NULL, i < 4 ? writer : reader, &loads[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(loads[i].errors, 0);
	}
	assert_int_equal(diff_area_error(f->da), 0);
	assert_image(f, 0, f->size);
}

struct one_write {
	struct fixture *f;
	uint64_t offset, count;
	int r;
};

static void *one_write(void *arg)
{
	struct one_write *w = arg;

	w->r = write_stamped(w->f, w->offset, w->count, 7);
	return NULL;
}

static void *one_read(void *arg)
{
	struct one_write *w = arg;
	uint8_t *buf = malloc(w->count);

	w->r = device_pread(w->f->img, buf, w->count, w->offset, 0);
	if (w->r == 0 && memcmp(buf, w->f->at_take + w->offset, w->count) != 0)
		w->r = -EILSEQ;
	free(buf);
	return NULL;
}

/* A write waits for the old data to be read, not stored: while the storage
 * is stuck, origin writes complete, and the image reads the old data of
 * their blocks from the queued buffers, the rest of their chunks from the
 * origin; once the storage moves, from the storage. */
static void writes_do_not_wait_for_the_storage(void **state)
{
	struct fixture *f = *state;
	struct one_write w = { f, 3 * 256 * KIB + 8192, 4096, 1 };
	struct one_write same = { f, 3 * 256 * KIB, 256 * KIB, 1 };
	struct one_write other = { f, 5 * 256 * KIB, 256 * KIB, 1 };
	pthread_t tw, ts, to;

	f->store->pause_writes = true;
	assert_int_equal(pthread_create(&tw, NULL, one_write, &w), 0);
	pthread_join(tw, NULL); /* returns while its copy is not stored */
	assert_int_equal(w.r, 0);
	assert_int_equal(write_stamped(f, 3 * 256 * KIB + 65536, 8192, 2), 0);
	fake_wait_paused(f->store, 1);
	assert_int_equal(pthread_create(&ts, NULL, one_read, &same), 0);
	assert_int_equal(pthread_create(&to, NULL, one_read, &other), 0);
	pthread_join(ts, NULL);
	pthread_join(to, NULL);
	assert_int_equal(same.r, 0);
	assert_int_equal(other.r, 0);
	assert_int_equal(f->store->paused, 1);
	assert_int_equal(f->store->bytes_written, 0);
	fake_release(f->store);
	diff_area_drain(f->da);
	assert_int_equal(f->store->bytes_written, 4096 + 8192);
	assert_image(f, 0, f->size);
}

/* An image write over blocks whose copy is still queued waits for it: the
 * copy stored after the image write would undo it. */
static void image_write_over_a_queued_copy(void **state)
{
	struct fixture *f = *state;
	uint8_t data[4096], back[4096];

	f->store->pause_writes = true;
	assert_int_equal(write_stamped(f, 7 * 256 * KIB, 4096, 1), 0);
	fake_wait_paused(f->store, 1);
	memset(data, 0x77, sizeof(data));
	fake_release(f->store); /* the image write waits for the queue, then goes */
	assert_int_equal(device_pwrite(f->img, data, sizeof(data), 7 * 256 * KIB, 0), 0);
	diff_area_drain(f->da);
	assert_int_equal(device_pread(f->img, back, sizeof(back), 7 * 256 * KIB, 0), 0);
	assert_memory_equal(back, data, sizeof(data));
	memcpy(f->at_take + 7 * 256 * KIB, data, sizeof(data));
	assert_image(f, 0, f->size);
}

/* A storage of 4 chunks and writes to 16: the fifth chunk overflows it. The
 * image is corrupted with -ENOSPC (one event), its I/O fails from then on,
 * and every origin write landed. */
static void overflow_in_the_middle(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct one_write w[16];
	pthread_t t[16];
	struct event ev;
	uint8_t buf[4096];

	setup_with(f, 16 * MIB, 4 * 256 * KIB, 0);
	*state = f;
	f->store->pause_writes = true; /* the first copies stay queued: overflow comes in their middle */
	for (int i = 0; i < 16; i++) {
		w[i] = (struct one_write){ f, (uint64_t)i * 256 * KIB + 4096, 8192, 1 };
		assert_int_equal(pthread_create(&t[i], NULL, one_write, &w[i]), 0);
	}
	for (int i = 0; i < 16; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].r, 0);
	}
	assert_int_equal(diff_area_error(f->da), -ENOSPC);
	fake_release(f->store);
	diff_area_drain(f->da);
	assert_int_equal(diff_area_error(f->da), -ENOSPC);
	assert_int_equal(device_pread(f->img, buf, sizeof(buf), 0, 0), -EIO);
	/* exactly one corrupted event (after the first low_free_space ones) */
	int corrupted = 0;

	while (event_queue_wait(&f->events, 0, &ev) == 0)
		if (ev.code == EVENT_CORRUPTED) {
			assert_int_equal(ev.corrupted.err_code, -ENOSPC);
			corrupted++;
		}
	assert_int_equal(corrupted, 1);
	/* the origin holds every write */
	for (int i = 0; i < 16; i++) {
		uint64_t lba = ((uint64_t)i * 256 * KIB + 4096) / SECTOR, gen;

		memcpy(&gen, f->origin->data + lba * SECTOR + 8, 8);
		assert_int_equal(gen, 7);
	}
}

/* The storage fails a write in the middle of a copy: the image is corrupted
 * with -EIO and fails from then on; the origin write lands. */
static void storage_fails_mid_copy(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[4096];
	struct event ev;

	assert_int_equal(write_stamped(f, 0, 4096, 1), 0); /* one good copy */
	diff_area_drain(f->da);
	f->store->fail_writes = EIO;
	f->store->writes_ok = 0;
	assert_int_equal(write_stamped(f, MIB, 4096, 2), 0);
	diff_area_drain(f->da); /* the writer stores it, and fails */
	assert_int_equal(diff_area_error(f->da), -EIO);
	assert_int_equal(device_pread(f->img, buf, sizeof(buf), 0, 0), -EIO);
	assert_int_equal(event_queue_wait(&f->events, 0, &ev), 0); /* low_free_space at start */
	do
		assert_int_equal(event_queue_wait(&f->events, 0, &ev), 0);
	while (ev.code != EVENT_CORRUPTED);
	assert_int_equal(ev.corrupted.err_code, -EIO);
	/* later writes need no copy, and land */
	assert_int_equal(write_stamped(f, 2 * MIB, 4096, 3), 0);
	uint64_t gen;

	memcpy(&gen, f->origin->data + 2 * MIB + 8, 8);
	assert_int_equal(gen, 3);
}

/* The origin cannot be read for a copy: the image is corrupted, and the
 * write still goes to the origin (which may fail it for itself). */
static void origin_read_fails_mid_copy(void **state)
{
	struct fixture *f = *state;

	f->origin->fail_reads = EIO;
	assert_int_equal(write_stamped(f, 0, 4096, 1), 0);
	f->origin->fail_reads = 0;
	assert_int_equal(diff_area_error(f->da), -EIO);
}

/* The snapshot is destroyed while copies are queued and the storage is
 * stuck: the destroy does not wait for them, the image fails from then on,
 * the origin goes on without copies, and the queue is stored or dropped when
 * the area goes (teardown), never written to freed memory. */
static void destroy_while_stores_are_queued(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[4096];

	f->store->pause_writes = true;
	for (int i = 0; i < 4; i++)
		assert_int_equal(write_stamped(f, (uint64_t)i * 256 * KIB, 4096, 1), 0);
	fake_wait_paused(f->store, 1);
	disarm(f);
	assert_int_equal(device_pread(f->img, buf, sizeof(buf), 0, 0), -EIO);
	assert_int_equal(write_stamped(f, 8 * 256 * KIB, 4096, 9), 0); /* no copy now */
	fake_release(f->store);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(a_write_copies_only_its_blocks, setup, teardown),
		cmocka_unit_test_setup_teardown(concurrent_writers_and_readers, setup, teardown),
		cmocka_unit_test_setup_teardown(concurrent_writers_and_readers, setup_small_queue, teardown),
		cmocka_unit_test_setup_teardown(writes_do_not_wait_for_the_storage, setup, teardown),
		cmocka_unit_test_setup_teardown(image_write_over_a_queued_copy, setup, teardown),
		cmocka_unit_test_teardown(overflow_in_the_middle, teardown),
		cmocka_unit_test_setup_teardown(storage_fails_mid_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(origin_read_fails_mid_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(destroy_while_stores_are_queued, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
