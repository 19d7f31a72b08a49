/* Unit tests: the backup client's block runs (backup/block_list.c): extents
 * rounded out to whole blocks, merged when they touch, clipped to the image. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backup/block_list.h"

#define BS 65536u

static void rounds_out_and_merges(void **state)
{
	struct block_list l = { 0 };

	/* one byte inside block 2 takes the block */
	assert_int_equal(block_list_add(&l, 2 * BS + 100, 1, BS, 100 * BS), 0);
	/* a range that cuts blocks 3 and 4 touches the run: merged */
	assert_int_equal(block_list_add(&l, 3 * BS + 10, BS, BS, 100 * BS), 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.v[0].first, 2);
	assert_int_equal(l.v[0].count, 3);
	/* overlapping the last block again adds nothing */
	assert_int_equal(block_list_add(&l, 4 * BS, 10, BS, 100 * BS), 0);
	assert_int_equal(l.blocks, 3);
	/* a gap starts a new run */
	assert_int_equal(block_list_add(&l, 10 * BS, 2 * BS, BS, 100 * BS), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.v[1].first, 10);
	assert_int_equal(l.v[1].count, 2);
	assert_int_equal(l.blocks, 5);
	/* extents must come in order */
	assert_int_equal(block_list_add(&l, 0, 1, BS, 100 * BS), -EINVAL);
	block_list_free(&l);
	assert_int_equal(l.n, 0);
}

static void clips_to_the_image(void **state)
{
	struct block_list l = { 0 };
	uint64_t size = 3 * BS + 512; /* a partial last block */

	assert_int_equal(block_count(size, BS), 4);
	assert_int_equal(block_length(3, size, BS), 512);
	assert_int_equal(block_length(2, size, BS), BS);
	assert_int_equal(block_list_add(&l, 3 * BS, 10 * BS, BS, size), 0);
	assert_int_equal(l.blocks, 1);
	/* past the end and empty: nothing */
	assert_int_equal(block_list_add(&l, 5 * BS, BS, BS, size), 0);
	assert_int_equal(block_list_add(&l, 0, 0, BS, size), 0);
	assert_int_equal(l.blocks, 1);
	assert_int_equal(block_list_add(&l, 0, 1, 0, size), -EINVAL);
	block_list_free(&l);
}

static void many_runs(void **state)
{
	struct block_list l = { 0 };

	for (uint64_t i = 0; i < 1000; i++)
		assert_int_equal(block_list_add(&l, i * 2 * BS, 1, BS, 4000 * BS), 0);
	assert_int_equal(l.n, 1000);
	assert_int_equal(l.blocks, 1000);
	assert_int_equal(l.v[999].first, 1998);
	block_list_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rounds_out_and_merges),
		cmocka_unit_test(clips_to_the_image),
		cmocka_unit_test(many_runs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
