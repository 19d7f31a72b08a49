/* Unit tests: the CBT map across a change of the device's capacity
 * (filters/cbt_map.c). As in blksnap, a take resets a map that is corrupted or
 * was made for another capacity: geometry for the new capacity, numbers back
 * to the start, a new generation. A take at the same capacity keeps it all. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "blksnap/cbt_map.h"
#include "blksnap/params.h"

#define MIB (1024ull * 1024)
#define GIB (1024ull * MIB)

static void take_at_same_capacity_keeps_the_generation(void **state)
{
	struct params p;
	struct cbt_map *m;
	uuid_t gen;

	(void)state;
	params_defaults(&p);
	assert_int_equal(cbt_map_create(&m, 64 * MIB, &p), 0);
	uuid_copy(gen, m->generation_id);
	assert_int_equal(cbt_map_mark(m, 0, 4096), 0);
	cbt_map_switch(m, 64 * MIB, &p);
	assert_int_equal(uuid_compare(gen, m->generation_id), 0);
	assert_int_equal(m->snap_number_previous, 1);
	assert_int_equal(m->read_map[0], 1);
	cbt_map_destroy(m);
}

static void corrupted_map_resets_for_the_new_capacity(void **state)
{
	struct params p;
	struct cbt_map *m;
	uint8_t buf[2048];
	uuid_t gen;

	(void)state;
	params_defaults(&p);
	assert_int_equal(cbt_map_create(&m, 64 * MIB, &p), 0);
	cbt_map_switch(m, 64 * MIB, &p);
	cbt_map_switch(m, 64 * MIB, &p);
	assert_int_equal(cbt_map_mark(m, 0, 4096), 0);
	uuid_copy(gen, m->generation_id);

	/* the resize: the map keeps its geometry and says it is corrupted */
	cbt_map_set_corrupted(m);
	assert_true(m->is_corrupted);
	assert_int_equal(m->device_capacity, 64 * MIB);
	assert_int_equal(m->blk_count, 1024);
	/* writes past the old end cannot be described: still corrupted, no overrun */
	assert_int_equal(cbt_map_mark(m, 100 * MIB, 4096), -EINVAL);

	/* the take: a fresh map for 96 MiB, in a new generation */
	cbt_map_switch(m, 96 * MIB, &p);
	assert_false(m->is_corrupted);
	assert_int_not_equal(uuid_compare(gen, m->generation_id), 0);
	assert_int_equal(m->device_capacity, 96 * MIB);
	assert_int_equal(m->blk_size_shift, 16);
	assert_int_equal(m->blk_count, 1536);
	assert_int_equal(m->snap_number_previous, 1);
	assert_int_equal(m->snap_number_active, 2);
	assert_int_equal(cbt_map_read(m, 0, sizeof(buf), buf), 1536);
	for (size_t i = 0; i < 1536; i++)
		assert_int_equal(buf[i], 0); /* nothing is known to have changed in the new generation */
	assert_int_equal(cbt_map_mark(m, 96 * MIB - 512, 512), 0); /* the new end is tracked */
	assert_int_equal(m->write_map[1535], 2);
	cbt_map_destroy(m);
}

static void capacity_change_alone_resets(void **state)
{
	struct params p;
	struct cbt_map *m;
	uuid_t gen;

	(void)state;
	params_defaults(&p);
	assert_int_equal(cbt_map_create(&m, 64 * MIB, &p), 0);
	uuid_copy(gen, m->generation_id);
	/* not marked corrupted, yet made for another capacity (blksnap checks this too) */
	cbt_map_switch(m, 32 * MIB, &p);
	assert_int_not_equal(uuid_compare(gen, m->generation_id), 0);
	assert_int_equal(m->device_capacity, 32 * MIB);
	assert_int_equal(m->blk_count, 512);
	cbt_map_destroy(m);
}

static void block_size_follows_the_new_capacity(void **state)
{
	struct params p;
	struct cbt_map *m;

	(void)state;
	params_defaults(&p);
	assert_int_equal(cbt_map_create(&m, 64 * MIB, &p), 0);
	/* 200 GiB in 64 KiB blocks is more than 2^21 of them: the block doubles */
	cbt_map_set_corrupted(m);
	cbt_map_switch(m, 200 * GIB, &p);
	assert_int_equal(m->blk_size_shift, 17);
	assert_int_equal(m->blk_count, 200 * GIB >> 17);
	/* and back down */
	cbt_map_set_corrupted(m);
	cbt_map_switch(m, 48 * MIB, &p);
	assert_int_equal(m->blk_size_shift, 16);
	assert_int_equal(m->blk_count, 768);
	/* a capacity that is not a whole number of blocks: the last block is partial */
	cbt_map_set_corrupted(m);
	cbt_map_switch(m, 64 * MIB + 512, &p);
	assert_int_equal(m->blk_count, 1025);
	assert_int_equal(cbt_map_mark(m, 64 * MIB, 512), 0);
	cbt_map_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(take_at_same_capacity_keeps_the_generation),
		cmocka_unit_test(corrupted_map_resets_for_the_new_capacity),
		cmocka_unit_test(capacity_change_alone_resets),
		cmocka_unit_test(block_size_follows_the_new_capacity),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
