/* Unit tests: bounded extent lists (core/extents.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/extents.h"

static void merges_neighbours_of_one_type(void **state)
{
	struct extents *e = extents_new(0, 1000, 16);

	assert_non_null(e);
	assert_int_equal(extents_add(e, 0, 100, 0), 0);
	assert_int_equal(extents_add(e, 100, 100, 0), 0);
	assert_int_equal(extents_add(e, 200, 50, EXTENT_HOLE | EXTENT_ZERO), 0);
	assert_int_equal(extents_count(e), 2);
	assert_int_equal(extents_get(e, 0)->length, 200);
	assert_int_equal(extents_get(e, 1)->offset, 200);
	assert_int_equal(extents_get(e, 1)->type, EXTENT_HOLE | EXTENT_ZERO);
	assert_int_equal(extents_next(e), 250);
	assert_false(extents_done(e));
	extents_free(e);
}

static void clips_to_the_range(void **state)
{
	struct extents *e = extents_new(100, 200, 16);

	/* starts before the range, ends past it */
	assert_int_equal(extents_add(e, 0, 1000, 0), 0);
	assert_int_equal(extents_count(e), 1);
	assert_int_equal(extents_get(e, 0)->offset, 100);
	assert_int_equal(extents_get(e, 0)->length, 100);
	assert_true(extents_done(e));
	/* more after the end is ignored */
	assert_int_equal(extents_add(e, 200, 10, EXTENT_HOLE), 0);
	assert_int_equal(extents_count(e), 1);
	extents_free(e);
}

static void refuses_gaps(void **state)
{
	struct extents *e = extents_new(0, 100, 4);

	assert_int_equal(extents_add(e, 10, 10, 0), -EINVAL);
	assert_int_equal(extents_count(e), 0);
	extents_free(e);
}

static void count_limit_ends_the_list(void **state)
{
	struct extents *e = extents_new(0, 1000, 2);

	assert_int_equal(extents_add(e, 0, 10, 0), 0);
	assert_int_equal(extents_add(e, 10, 10, EXTENT_HOLE), 0);
	assert_false(extents_done(e));
	/* a third type does not fit: the list ends where it stands */
	assert_int_equal(extents_add(e, 20, 10, 0), 0);
	assert_true(extents_done(e));
	assert_int_equal(extents_count(e), 2);
	assert_int_equal(extents_end(e), 20);
	extents_free(e);
}

static void overflow_safe(void **state)
{
	struct extents *e = extents_new(UINT64_MAX - 100, UINT64_MAX, 4);

	assert_int_equal(extents_add(e, UINT64_MAX - 100, UINT64_MAX, 0), 0);
	assert_int_equal(extents_get(e, 0)->length, 100);
	assert_true(extents_done(e));
	extents_free(e);
	assert_null(extents_new(10, 5, 4));
	assert_null(extents_new(0, 5, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(merges_neighbours_of_one_type),
		cmocka_unit_test(clips_to_the_range),
		cmocka_unit_test(refuses_gaps),
		cmocka_unit_test(count_limit_ends_the_list),
		cmocka_unit_test(overflow_safe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
