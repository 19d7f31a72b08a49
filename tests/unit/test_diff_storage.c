/* Unit tests: the difference storage's accounting (blksnap/diff_storage.c)
 * over stores in memory: chunks never straddle two ranges; blksnap's
 * low_free_space rule (an event whenever requested - filled falls to half of
 * diff_storage_minimum); the sticky overflow; ranges checked before an
 * append; the self-growing mode, which uses a file's space from its first
 * byte and asks for more only at its limit. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "blksnap/diff_storage.h"
#include "blksnap/event_queue.h"
#include "blksnap/params.h"
#include "blksnap/tracker.h"
#include "common/log.h"
#include "core/backing.h"
#include "core/store_id.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)

struct mem {
	uint8_t *data;
	uint64_t size;
};

static int mem_pread(void *priv, void *buf, uint64_t count, uint64_t offset)
{
	struct mem *m = priv;

	if (offset + count > m->size)
		return -EIO;
	memcpy(buf, m->data + offset, count);
	return 0;
}

static int mem_pwrite(void *priv, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	struct mem *m = priv;

	if (offset + count > m->size)
		return -EIO;
	memcpy(m->data + offset, buf, count);
	return 0;
}

static void mem_close(void *priv)
{
	struct mem *m = priv;

	free(m->data);
	free(m);
}

static const struct backing_ops mem_ops = { .pread = mem_pread, .pwrite = mem_pwrite, .close = mem_close };

static struct ds_file *mem_file(uint64_t size)
{
	struct mem *m = calloc(1, sizeof(*m));
	struct backing *b;
	struct ds_file *f;

	m->data = calloc(1, size);
	m->size = size;
	assert_int_equal(backing_new_custom(&mem_ops, m, size, "mem", &b), 0);
	assert_int_equal(ds_file_wrap(b, &f), 0);
	return f;
}

struct fixture {
	struct params p;
	struct event_queue events;
	struct diff_storage *ds;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	log_set_level(LOG_LEVEL_ERROR);
	params_defaults(&f->p);
	f->p.diff_storage_minimum = 2048; /* 1 MiB steps */
	event_queue_init(&f->events);
	assert_int_equal(diff_storage_new(&f->p, &f->events, &f->ds), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	diff_storage_free(f->ds);
	event_queue_close(&f->events);
	event_queue_destroy(&f->events);
	free(f);
	return 0;
}

/* Events queued now: how many low_free_space, each asking for the minimum. */
static int low_events(struct fixture *f)
{
	struct event ev;
	int n = 0;

	while (event_queue_wait(&f->events, 0, &ev) == 0) {
		assert_int_equal(ev.code, EVENT_LOW_FREE_SPACE);
		assert_int_equal(ev.low_free_space.requested_nr_sect, f->p.diff_storage_minimum);
		n++;
	}
	return n;
}

static void append(struct fixture *f, uint64_t size, const struct sector_range *r, size_t n)
{
	struct ds_file *file = mem_file(size);
	struct byte_range br[8];
	char err[256];

	assert_int_equal(ds_file_ranges(file, r, n, br, err, sizeof(err)), 0);
	assert_int_equal(diff_storage_append(f->ds, file, br, n ? n : 1), 0);
}

/* blksnap's accounting: an event at start; each allocation fills; whenever
 * requested - filled is at most half the minimum, another event. */
static void low_free_space_events(void **state)
{
	struct fixture *f = *state;
	struct diff_storage_stats st;
	uint64_t virt;

	diff_storage_start(f->ds);
	assert_int_equal(low_events(f), 1);
	append(f, 2 * MIB, NULL, 0);
	/* requested 2048 sectors: 512 filled leaves 1536; 1024 filled leaves
	 * 1024, half the minimum: ask again (requested 4096) */
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &virt), 0);
	assert_int_equal(virt, 0);
	assert_int_equal(low_events(f), 0);
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &virt), 0);
	assert_int_equal(low_events(f), 1);
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &virt), 0);
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &virt), 0);
	assert_int_equal(low_events(f), 0);
	diff_storage_stats(f->ds, &st);
	assert_int_equal(st.requested, 4096);
	assert_int_equal(st.filled, 2048);
	assert_int_equal(st.used, 1 * MIB);
	assert_int_equal(st.capacity, 2 * MIB);
}

/* A chunk never straddles two ranges: the rest of a short range is skipped. */
static void chunks_do_not_straddle(void **state)
{
	struct fixture *f = *state;
	struct sector_range r[] = { { 0, 768 }, { 1024, 1024 } }; /* 384 KiB and 512 KiB */
	uint8_t buf[4096], back[4096];
	uint64_t a, b, c;

	append(f, 1 * MIB, r, 2);
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &a), 0);
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &b), 0); /* 128 KiB left in the first: skipped */
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &c), 0);
	assert_int_equal(a, 0);
	assert_int_equal(b, 384 * KIB);
	assert_int_equal(c, 640 * KIB);
	/* and it is sticky: out of room once, out of room for good */
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &c), -ENOSPC);
	append(f, 1 * MIB, NULL, 0);
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &c), -ENOSPC);
	/* what is written is read back, at the right place of the right store */
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(diff_storage_write(f->ds, b + 4096, buf, sizeof(buf)), 0);
	assert_int_equal(diff_storage_read(f->ds, b + 4096, back, sizeof(back)), 0);
	assert_memory_equal(buf, back, sizeof(buf));
	/* a piece past its range is refused */
	assert_int_equal(diff_storage_write(f->ds, 384 * KIB - 2048, buf, sizeof(buf)), -EIO);
}

/* Ranges are checked before anything is appended. */
static void bad_ranges(void **state)
{
	struct ds_file *file = mem_file(1 * MIB);
	struct sector_range outside[] = { { 2000, 100 } };
	struct sector_range empty[] = { { 0, 0 } };
	struct sector_range overlap[] = { { 0, 100 }, { 99, 10 } };
	struct sector_range fine[] = { { 0, 100 }, { 100, 10 } };
	struct byte_range br[2];
	char err[256];

	assert_int_equal(ds_file_ranges(file, outside, 1, br, err, sizeof(err)), -EINVAL);
	assert_int_equal(ds_file_ranges(file, empty, 1, br, err, sizeof(err)), -EINVAL);
	assert_int_equal(ds_file_ranges(file, overlap, 2, br, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "overlap"));
	assert_int_equal(ds_file_ranges(file, fine, 2, br, err, sizeof(err)), 0);
	assert_int_equal(br[1].offset, 100 * 512);
	assert_int_equal(br[1].len, 10 * 512);
	ds_file_free(file);
	(void)state;
}

/* Self-growing: a file with 3 MiB in it is used from its first byte; it grows
 * a step (1 MiB) at a time up to 5 MiB, with no event until the limit. */
static void growing_uses_the_file_first(void **state)
{
	struct fixture *f = *state;
	char path[] = "/tmp/bdf-unit-grow.XXXXXX", err[256];
	struct diff_storage_stats st;
	struct ds_file *file;
	uint64_t virt;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 3 * MIB), 0);
	close(fd);
	assert_int_equal(ds_file_create(path, &file, err, sizeof(err)), 0);
	unlink(path);
	assert_int_equal(diff_storage_set_growing(f->ds, file, 5 * MIB), 0);
	diff_storage_start(f->ds);
	diff_storage_stats(f->ds, &st);
	assert_int_equal(st.capacity, 3 * MIB); /* no step yet: 3 MiB is plenty */
	assert_int_equal(low_events(f), 0);
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &virt), 0);
	assert_int_equal(virt, 0);
	for (int i = 1; i < 20; i++)
		assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &virt), 0);
	diff_storage_stats(f->ds, &st);
	assert_int_equal(st.capacity, 5 * MIB);
	assert_int_equal(st.used, 5 * MIB);
	assert_int_equal(low_events(f), 1); /* at the limit, blksnap's event */
	assert_int_equal(diff_storage_alloc(f->ds, 256 * KIB, &virt), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(low_free_space_events, setup, teardown),
		cmocka_unit_test_setup_teardown(chunks_do_not_straddle, setup, teardown),
		cmocka_unit_test(bad_ranges),
		cmocka_unit_test_setup_teardown(growing_uses_the_file_first, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
