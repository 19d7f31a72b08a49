/* Unit tests: the CBT map (filters/cbt_map.c): blksnap's block-size formula,
 * marks, the take switch, the new generation at the 255th take, corruption and reset,
 * and the changed extents served as qemu:dirty-bitmap. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/extents.h"
#include "blksnap/cbt_map.h"
#include "blksnap/params.h"

#define KiB 1024ull
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

static struct params defaults(void)
{
	struct params p;

	params_defaults(&p);
	return p;
}

static void block_size_follows_blksnap(void **state)
{
	struct params p = defaults();
	unsigned shift;
	uint64_t count;

	cbt_map_geometry(&p, 64 * MiB, &shift, &count);
	assert_int_equal(shift, 16);
	assert_int_equal(count, 1024);
	/* 2097152 blocks of 64 KiB is 128 GiB: one byte more doubles the block */
	cbt_map_geometry(&p, 128 * GiB, &shift, &count);
	assert_int_equal(shift, 16);
	assert_int_equal(count, 2097152);
	cbt_map_geometry(&p, 128 * GiB + 512, &shift, &count);
	assert_int_equal(shift, 17);
	assert_int_equal(count, 1048577);
	/* capped at the maximum shift: the count may then exceed the maximum */
	cbt_map_geometry(&p, 1ull << 50, &shift, &count);
	assert_int_equal(shift, 26);
	assert_int_equal(count, (1ull << 50) >> 26);
	/* a partial last block counts */
	cbt_map_geometry(&p, 64 * KiB + 512, &shift, &count);
	assert_int_equal(count, 2);
}

static void marks_switch_and_numbers(void **state)
{
	struct params p = defaults();
	struct cbt_map *m;
	uint8_t buf[16];

	assert_int_equal(cbt_map_create(&m, 1 * MiB, &p), 0);
	assert_int_equal(m->snap_number_active, 1);
	assert_int_equal(m->snap_number_previous, 0);
	/* a write straddling two blocks marks both */
	assert_int_equal(cbt_map_mark(m, 64 * KiB - 512, 1024), 0);
	assert_int_equal(cbt_map_read(m, 0, sizeof(buf), buf), 16);
	assert_int_equal(buf[0], 0); /* the read map moves only at take */
	cbt_map_switch(m, 1 * MiB, &p);
	assert_int_equal(m->snap_number_previous, 1);
	assert_int_equal(m->snap_number_active, 2);
	assert_int_equal(cbt_map_read(m, 0, sizeof(buf), buf), 16);
	assert_int_equal(buf[0], 1);
	assert_int_equal(buf[1], 1);
	assert_int_equal(buf[2], 0);
	/* a later write raises the write map only */
	assert_int_equal(cbt_map_mark(m, 2 * 64 * KiB, 1), 0);
	cbt_map_read(m, 0, sizeof(buf), buf);
	assert_int_equal(buf[2], 0);
	cbt_map_switch(m, 1 * MiB, &p);
	cbt_map_read(m, 0, sizeof(buf), buf);
	assert_int_equal(buf[0], 1);
	assert_int_equal(buf[2], 2);
	/* reading past the map gives what is there */
	assert_int_equal(cbt_map_read(m, 10, 100, buf), 6);
	assert_int_equal(cbt_map_read(m, 16, 1, buf), 0);
	cbt_map_destroy(m);
}

static void mark_both_uses_active_and_previous(void **state)
{
	struct params p = defaults();
	struct cbt_map *m;
	uint8_t buf[16];

	assert_int_equal(cbt_map_create(&m, 1 * MiB, &p), 0);
	cbt_map_switch(m, 1 * MiB, &p); /* previous 1, active 2 */
	assert_int_equal(cbt_map_mark_both(m, 5 * 64 * KiB, 1), 0);
	cbt_map_read(m, 0, sizeof(buf), buf);
	assert_int_equal(buf[5], 1);
	assert_int_equal(m->write_map[5], 2);
	/* out of range: refused, and the map is not corrupted */
	assert_int_equal(cbt_map_mark_both(m, 1 * MiB - 512, 1024), -EINVAL);
	assert_false(m->is_corrupted);
	cbt_map_destroy(m);
}

/* The take that would make active 256 (the 255th) starts a new generation
 * numbered like any other: its snapshot is number 1, the blocks written after
 * it get 2, and a backup taken from it is followed by incrementals. */
static void the_255th_take_starts_a_new_generation_at_1(void **state)
{
	struct params p = defaults();
	struct cbt_map *m;
	uuid_t g;

	assert_int_equal(cbt_map_create(&m, 1 * MiB, &p), 0);
	uuid_copy(g, m->generation_id);
	for (int i = 1; i < 255; i++) {
		assert_int_equal(cbt_map_mark(m, 0, 1), 0);
		assert_int_equal(cbt_map_switch(m, 1 * MiB, &p), 0);
		assert_int_equal(m->snap_number_previous, i);
		assert_int_equal(m->snap_number_active, i + 1);
		assert_int_equal(uuid_compare(g, m->generation_id), 0);
	}
	assert_int_equal(m->snap_number_active, 255);
	assert_int_equal(cbt_map_mark(m, 0, 1), 0);
	assert_int_equal(cbt_map_switch(m, 1 * MiB, &p), 0);
	assert_int_equal(m->snap_number_previous, 1);
	assert_int_equal(m->snap_number_active, 2);
	assert_int_not_equal(uuid_compare(g, m->generation_id), 0);
	/* nothing is known to have changed since the new generation began */
	assert_int_equal(m->write_map[0], 0);
	assert_int_equal(m->read_map[0], 0);
	/* a write after it is "changed since snapshot 1" at the next take */
	assert_int_equal(cbt_map_mark(m, 65536, 1), 0);
	assert_int_equal(cbt_map_switch(m, 1 * MiB, &p), 0);
	assert_int_equal(m->snap_number_previous, 2);
	assert_true(m->read_map[1] > 1);
	assert_int_equal(m->read_map[0], 0);
	cbt_map_destroy(m);
}

static void out_of_range_corrupts_and_take_resets(void **state)
{
	struct params p = defaults();
	struct cbt_map *m;
	uuid_t g;

	assert_int_equal(cbt_map_create(&m, 1 * MiB, &p), 0);
	uuid_copy(g, m->generation_id);
	cbt_map_switch(m, 1 * MiB, &p);
	cbt_map_switch(m, 1 * MiB, &p);
	assert_int_equal(cbt_map_mark(m, 1 * MiB, 512), -EINVAL);
	assert_true(m->is_corrupted);
	/* overflow-safe: offset + count wraps around 2^64 */
	assert_int_equal(cbt_map_mark(m, 512, UINT64_MAX), -EINVAL);
	cbt_map_switch(m, 1 * MiB, &p);
	assert_false(m->is_corrupted);
	assert_int_equal(m->snap_number_previous, 1);
	assert_int_equal(m->snap_number_active, 2);
	assert_int_not_equal(uuid_compare(g, m->generation_id), 0);
	cbt_map_destroy(m);
}

/* The map after three takes: block i holds read-map number NUMS[i]. */
static struct cbt_map *map_with(const uint8_t *nums, size_t n, uint64_t capacity)
{
	struct params p = defaults();
	struct cbt_map *m;

	assert_int_equal(cbt_map_create(&m, capacity, &p), 0);
	assert_true(n <= m->blk_count);
	memcpy(m->read_map, nums, n);
	m->snap_number_previous = 3;
	m->snap_number_active = 4;
	return m;
}

static void changed_extents_since_n(void **state)
{
	static const uint8_t nums[8] = { 0, 1, 2, 2, 3, 0, 0, 3 };
	struct cbt_map *m = map_with(nums, 8, 8 * 64 * KiB - 4 * KiB);
	struct extents *e;

	/* since 1: blocks 2..4 and 7 (the last, partial block, to the capacity) */
	e = extents_new(0, 8 * 64 * KiB - 4 * KiB, 64);
	assert_int_equal(cbt_map_changed(m, 1, 0, 8 * 64 * KiB - 4 * KiB, e), 0);
	assert_int_equal(extents_count(e), 4);
	assert_int_equal(extents_get(e, 0)->length, 2 * 64 * KiB);
	assert_int_equal(extents_get(e, 0)->type, 0);
	assert_int_equal(extents_get(e, 1)->offset, 2 * 64 * KiB);
	assert_int_equal(extents_get(e, 1)->length, 3 * 64 * KiB);
	assert_int_equal(extents_get(e, 1)->type, EXTENT_DIRTY);
	assert_int_equal(extents_get(e, 2)->type, 0);
	assert_int_equal(extents_get(e, 3)->offset, 7 * 64 * KiB);
	assert_int_equal(extents_get(e, 3)->length, 64 * KiB - 4 * KiB);
	assert_int_equal(extents_get(e, 3)->type, EXTENT_DIRTY);
	extents_free(e);

	/* since 0, from the middle of block 1 to the middle of block 3 */
	e = extents_new(64 * KiB + 512, 3 * 64 * KiB + 512, 64);
	assert_int_equal(cbt_map_changed(m, 0, 64 * KiB + 512, 2 * 64 * KiB, e), 0);
	assert_int_equal(extents_count(e), 1);
	assert_int_equal(extents_get(e, 0)->offset, 64 * KiB + 512);
	assert_int_equal(extents_get(e, 0)->length, 2 * 64 * KiB);
	assert_int_equal(extents_get(e, 0)->type, EXTENT_DIRTY);
	extents_free(e);

	/* since 3 (the image's own number): nothing */
	e = extents_new(0, 8 * 64 * KiB - 4 * KiB, 64);
	assert_int_equal(cbt_map_changed(m, 3, 0, 8 * 64 * KiB - 4 * KiB, e), 0);
	assert_int_equal(extents_count(e), 1);
	assert_int_equal(extents_get(e, 0)->type, 0);
	extents_free(e);

	/* a count limit of one (REQ_ONE) stops after the first extent */
	e = extents_new(0, 8 * 64 * KiB - 4 * KiB, 1);
	assert_int_equal(cbt_map_changed(m, 1, 0, 8 * 64 * KiB - 4 * KiB, e), 0);
	assert_int_equal(extents_count(e), 1);
	assert_int_equal(extents_get(e, 0)->length, 2 * 64 * KiB);
	extents_free(e);
	cbt_map_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(block_size_follows_blksnap),
		cmocka_unit_test(marks_switch_and_numbers),
		cmocka_unit_test(mark_both_uses_active_and_previous),
		cmocka_unit_test(the_255th_take_starts_a_new_generation_at_1),
		cmocka_unit_test(out_of_range_corrupts_and_take_resets),
		cmocka_unit_test(changed_extents_since_n),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
