/* Unit tests: fault rules and the fault points (common/fault.c). The words
 * the control commands take; which requests a rule matches (kind, a range's
 * edges, a flush against a range); the rate's PRNG, the same for a seed and
 * near the rate over many draws; counts that spend a rule, also across
 * threads; clear; the points' table, their fast path, and the reset a test
 * needs. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/fault.h"

static struct fault_spec spec(unsigned ops, int error)
{
	return (struct fault_spec){ .ops = ops, .error = error, .rate = 1.0, .seed = 1 };
}

static bool fires(struct fault_rules *fr, unsigned op, uint64_t offset, uint64_t count)
{
	struct fault_hit hit;

	return fault_rules_check(fr, op, offset, count, &hit);
}

static void words(void **state)
{
	uint64_t o, l;
	unsigned ops;
	double rate;
	int e;

	assert_int_equal(fault_op_parse("write", &ops), 0);
	assert_int_equal(ops, FAULT_OP_WRITE);
	assert_int_equal(fault_op_parse("any", &ops), 0);
	assert_int_equal(ops, FAULT_OP_ANY);
	assert_string_equal(fault_op_name(FAULT_OP_TRIM), "trim");
	assert_int_equal(fault_op_parse("Write", &ops), -EINVAL);
	assert_int_equal(fault_error_parse("ENOSPC", &e), 0);
	assert_int_equal(e, ENOSPC);
	assert_int_equal(fault_error_parse("none", &e), 0);
	assert_int_equal(e, 0);
	assert_int_equal(fault_error_parse("EPERM", &e), -EINVAL);
	assert_int_equal(fault_rate_parse("0.25", &rate), 0);
	assert_true(rate == 0.25);
	assert_int_equal(fault_rate_parse("1", &rate), 0);
	assert_int_equal(fault_rate_parse("1.5", &rate), -EINVAL);
	assert_int_equal(fault_rate_parse("-0", &rate), -EINVAL);
	assert_int_equal(fault_rate_parse("nan", &rate), -EINVAL);
	assert_int_equal(fault_rate_parse("0.5x", &rate), -EINVAL);
	assert_int_equal(fault_range_parse("4096:1M", &o, &l), 0);
	assert_int_equal(o, 4096);
	assert_int_equal(l, 1 << 20);
	assert_int_equal(fault_range_parse("4096:0", &o, &l), -EINVAL);
	assert_int_equal(fault_range_parse("4096", &o, &l), -EINVAL);
	assert_int_equal(fault_range_parse("-1:5", &o, &l), -EINVAL);
	assert_int_equal(fault_range_parse("18446744073709551615:2", &o, &l), -EINVAL);
}

static void specs_refused(void **state)
{
	struct fault_spec s = spec(FAULT_OP_WRITE, EIO);
	char why[128];

	assert_int_equal(fault_spec_check(&s, why, sizeof(why)), 0);
	s.error = 0;
	assert_int_equal(fault_spec_check(&s, why, sizeof(why)), -EINVAL); /* does nothing */
	s.delay_ms = 5;
	assert_int_equal(fault_spec_check(&s, why, sizeof(why)), 0);
	s.short_write = true;
	assert_int_equal(fault_spec_check(&s, why, sizeof(why)), -EINVAL); /* short, no error */
	s = spec(FAULT_OP_READ, EIO);
	s.short_write = true;
	assert_int_equal(fault_spec_check(&s, why, sizeof(why)), -EINVAL); /* a short read */
	s = spec(FAULT_OP_WRITE, EIO);
	s.rate = 1.01;
	assert_int_equal(fault_spec_check(&s, why, sizeof(why)), -EINVAL);
	s = spec(0, EIO);
	assert_int_equal(fault_spec_check(&s, why, sizeof(why)), -EINVAL);
}

static void kinds_and_hit(void **state)
{
	struct fault_rules fr;
	struct fault_spec s = spec(FAULT_OP_WRITE | FAULT_OP_ZERO, ENOSPC);
	struct fault_hit hit;

	fault_rules_init(&fr);
	assert_false(fires(&fr, FAULT_OP_WRITE, 0, 512)); /* no rule */
	s.short_write = true;
	s.delay_ms = 7;
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	assert_false(fires(&fr, FAULT_OP_READ, 0, 512));
	assert_false(fires(&fr, FAULT_OP_FLUSH, 0, 0));
	assert_true(fault_rules_check(&fr, FAULT_OP_WRITE, 0, 512, &hit));
	assert_int_equal(hit.error, -ENOSPC);
	assert_true(hit.short_write);
	assert_int_equal(hit.delay_ms, 7);
	/* short only for writes */
	assert_true(fault_rules_check(&fr, FAULT_OP_ZERO, 0, 512, &hit));
	assert_false(hit.short_write);
	fault_rules_destroy(&fr);
}

static void range_overlap(void **state)
{
	struct fault_rules fr;
	struct fault_spec s = spec(FAULT_OP_ANY, EIO);

	fault_rules_init(&fr);
	s.offset = 4096;
	s.length = 4096;
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	assert_false(fires(&fr, FAULT_OP_WRITE, 0, 4096));    /* ends where it starts */
	assert_true(fires(&fr, FAULT_OP_WRITE, 0, 4097));     /* its first byte */
	assert_true(fires(&fr, FAULT_OP_WRITE, 8191, 1));     /* its last byte */
	assert_false(fires(&fr, FAULT_OP_WRITE, 8192, 512));  /* starts where it ends */
	assert_true(fires(&fr, FAULT_OP_WRITE, 0, 1 << 20));  /* covers it */
	assert_true(fires(&fr, FAULT_OP_READ, 5000, 10));     /* inside it */
	assert_true(fires(&fr, FAULT_OP_FLUSH, 0, 0));        /* a flush touches every byte */
	assert_false(fires(&fr, FAULT_OP_WRITE, UINT64_MAX - 512, 512));
	fault_rules_clear(&fr);
	/* a range at the very end of the offsets */
	s.offset = UINT64_MAX - 1024;
	s.length = 1024;
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	assert_false(fires(&fr, FAULT_OP_WRITE, 0, 4096));
	assert_true(fires(&fr, FAULT_OP_WRITE, UINT64_MAX - 2048, 1025));
	assert_false(fires(&fr, FAULT_OP_WRITE, UINT64_MAX - 2048, 1024));
	fault_rules_destroy(&fr);
}

/* N draws of a rule of RATE and SEED, as a bit string. */
static void draws(double rate, uint64_t seed, bool *out, size_t n)
{
	struct fault_rules fr;
	struct fault_spec s = spec(FAULT_OP_READ, EIO);

	fault_rules_init(&fr);
	s.rate = rate;
	s.seed = seed;
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	for (size_t i = 0; i < n; i++)
		out[i] = fires(&fr, FAULT_OP_READ, i * 512, 512);
	fault_rules_destroy(&fr);
}

static void rate_deterministic(void **state)
{
	enum { N = 10000 };
	static bool a[N], b[N];
	size_t k = 0;

	draws(0.3, 42, a, N);
	draws(0.3, 42, b, N);
	assert_memory_equal(a, b, sizeof(a)); /* the same seed, the same faults */
	for (size_t i = 0; i < N; i++)
		k += a[i];
	assert_in_range(k, N * 27 / 100, N * 33 / 100);
	draws(0.3, 43, b, N);
	assert_true(memcmp(a, b, sizeof(a)) != 0); /* another seed, others */
	draws(0.0, 42, a, N);
	for (size_t i = 0; i < N; i++)
		assert_false(a[i]);
	draws(1.0, 42, a, N);
	for (size_t i = 0; i < N; i++)
		assert_true(a[i]);
}

static void count_spends(void **state)
{
	struct fault_rules fr;
	struct fault_spec s = spec(FAULT_OP_WRITE, EIO);
	struct fault_rule_status st[FAULT_MAX_RULES];
	uint64_t injected;
	size_t n;

	fault_rules_init(&fr);
	s.count = 3;
	s.rate = 0.5;
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	for (int i = 0; i < 100; i++)
		fires(&fr, FAULT_OP_WRITE, 0, 512);
	assert_int_equal(atomic_load(&fr.live), 0);
	n = fault_rules_get(&fr, st, FAULT_MAX_RULES, &injected);
	assert_int_equal(n, 1);
	assert_true(st[0].spent);
	assert_int_equal(st[0].fired, 3);
	assert_int_equal(injected, 3);
	assert_true(st[0].matched > 3);
	assert_true(st[0].matched < 100); /* once spent it matches nothing */
	assert_false(fires(&fr, FAULT_OP_WRITE, 0, 512));

	/* a delay-only rule fires, and injects nothing */
	s = spec(FAULT_OP_READ, 0);
	s.delay_ms = 1;
	s.count = 1;
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	assert_true(fires(&fr, FAULT_OP_READ, 0, 512));
	assert_false(fires(&fr, FAULT_OP_READ, 0, 512));
	fault_rules_get(&fr, st, FAULT_MAX_RULES, &injected);
	assert_int_equal(injected, 3);
	fault_rules_destroy(&fr);
}

/* A rule that matches and does not fire lets the next one try; the first
 * that fires gives the fault. */
static void order_and_clear(void **state)
{
	struct fault_rules fr;
	struct fault_spec s = spec(FAULT_OP_WRITE, EIO);
	struct fault_hit hit;
	uint64_t injected;

	fault_rules_init(&fr);
	s.rate = 0.0;
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	s = spec(FAULT_OP_WRITE, ENOSPC);
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	s = spec(FAULT_OP_WRITE, EIO);
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	assert_true(fault_rules_check(&fr, FAULT_OP_WRITE, 0, 512, &hit));
	assert_int_equal(hit.error, -ENOSPC);
	assert_int_equal(atomic_load(&fr.live), 3);
	fault_rules_clear(&fr);
	assert_int_equal(atomic_load(&fr.live), 0);
	assert_false(fires(&fr, FAULT_OP_WRITE, 0, 512));
	assert_int_equal(fault_rules_get(&fr, NULL, 0, &injected), 0);
	assert_int_equal(injected, 1); /* what was injected stays counted */
	for (int i = 0; i < FAULT_MAX_RULES; i++)
		assert_int_equal(fault_rules_add(&fr, &s), 0);
	assert_int_equal(fault_rules_add(&fr, &s), -ENOSPC);
	fault_rules_destroy(&fr);
}

struct racer {
	struct fault_rules *fr;
	unsigned fired;
};

static void *race(void *arg)
{
	struct racer *r = arg;

	for (int i = 0; i < 20000; i++)
		r->fired += fires(r->fr, FAULT_OP_WRITE, (uint64_t)i * 4096, 4096);
	return NULL;
}

/* Threads share one rule: a count is spent exactly, never over. */
static void count_across_threads(void **state)
{
	struct fault_rules fr;
	struct fault_spec s = spec(FAULT_OP_WRITE, EIO);
	struct racer r[4];
	pthread_t t[4];
	unsigned total = 0;
	uint64_t injected;

	fault_rules_init(&fr);
	s.count = 5000;
	s.rate = 0.5;
	assert_int_equal(fault_rules_add(&fr, &s), 0);
	for (int i = 0; i < 4; i++) {
		r[i] = (struct racer){ .fr = &fr };
		assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		total += r[i].fired;
	}
	fault_rules_get(&fr, NULL, 0, &injected);
	assert_int_equal(total, 5000);
	assert_int_equal(injected, 5000);
	fault_rules_destroy(&fr);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void points(void **state)
{
	struct fault_spec s = spec(FAULT_OP_READ, EIO);
	struct fault_rule_status st[FAULT_MAX_RULES];
	uint64_t injected;
	double t0;
	bool seen = false;

	fault_points_reset();
	for (size_t i = 0; i < fault_point_count(); i++) {
		assert_non_null(fault_point_about(i));
		seen |= strcmp(fault_point_name(i), "diff_storage.write") == 0;
	}
	assert_true(seen);
	assert_null(fault_point_name(fault_point_count()));
	assert_int_equal(fault_point_hit("diff_storage.write"), 0);
	assert_int_equal(fault_point_add("no.such.point", &s), -ENOENT);
	assert_int_equal(fault_point_clear("no.such.point"), -ENOENT);

	s.count = 2;
	s.short_write = false;
	s.offset = 1 << 20; /* ignored: a point has no range */
	s.length = 512;
	assert_int_equal(fault_point_add("state.fsync", &s), 0);
	assert_int_equal(fault_point_hit("state.write"), 0);
	assert_int_equal(fault_point_hit("state.fsync"), -EIO);
	assert_int_equal(fault_point_hit("state.fsync"), -EIO);
	assert_int_equal(fault_point_hit("state.fsync"), 0); /* spent */
	for (size_t i = 0; i < fault_point_count(); i++)
		if (strcmp(fault_point_name(i), "state.fsync") == 0) {
			assert_int_equal(fault_point_get(i, st, FAULT_MAX_RULES, &injected), 1);
			assert_int_equal(injected, 2);
			assert_true(st[0].spent);
		}

	s = spec(FAULT_OP_ANY, 0);
	s.delay_ms = 30;
	s.count = 1;
	assert_int_equal(fault_point_add("dirty_log.sync", &s), 0);
	t0 = now_ms();
	assert_int_equal(fault_point_hit("dirty_log.sync"), 0);
	assert_true(now_ms() - t0 >= 29.0);

	s = spec(FAULT_OP_ANY, ENOSPC);
	assert_int_equal(fault_point_add("diff_storage.read", &s), 0);
	assert_int_equal(fault_point_clear("diff_storage.read"), 0);
	assert_int_equal(fault_point_hit("diff_storage.read"), 0);
	assert_int_equal(fault_point_add("diff_storage.read", &s), 0);
	assert_int_equal(fault_point_add("diff_storage.write", &s), 0);
	assert_int_equal(fault_point_clear(NULL), 0);
	assert_int_equal(fault_point_hit("diff_storage.read"), 0);
	assert_int_equal(fault_point_hit("diff_storage.write"), 0);

	fault_points_reset();
	for (size_t i = 0; i < fault_point_count(); i++) {
		assert_int_equal(fault_point_get(i, st, FAULT_MAX_RULES, &injected), 0);
		assert_int_equal(injected, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(words),
		cmocka_unit_test(specs_refused),
		cmocka_unit_test(kinds_and_hit),
		cmocka_unit_test(range_overlap),
		cmocka_unit_test(rate_deterministic),
		cmocka_unit_test(count_spends),
		cmocka_unit_test(order_and_clear),
		cmocka_unit_test(count_across_threads),
		cmocka_unit_test(points),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
