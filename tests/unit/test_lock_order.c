/* Unit tests: the lock-order checks of debug builds (common/lock_order.c):
 * locks taken in rank order pass, one of a lower rank than a lock held
 * aborts (in a child process), several of a rank that allows it pass. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/lock_order.h"

/* Run FN in a child; its exit status as wait() says. */
static int in_child(void (*fn)(void))
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		signal(SIGABRT, SIG_DFL); /* cmocka's handler would catch it */
		fn();
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void in_order(void)
{
	lock_order_acquire(LOCK_BLKSNAP, false);
	lock_order_acquire(LOCK_REGISTRY, false);
	lock_order_release(LOCK_REGISTRY);
	lock_order_acquire(LOCK_DEVICE_DRAIN, true);
	lock_order_acquire(LOCK_DEVICE_DRAIN, true); /* several devices, in name order */
	lock_order_acquire(LOCK_STRIPE, false);
	lock_order_acquire(LOCK_STORAGE, false);
	lock_order_acquire(LOCK_EVENTS, false);
	lock_order_release(LOCK_EVENTS);
	lock_order_release(LOCK_STORAGE);
	lock_order_release(LOCK_STRIPE);
	lock_order_release(LOCK_DEVICE_DRAIN);
	lock_order_release(LOCK_DEVICE_DRAIN);
	lock_order_release(LOCK_BLKSNAP);
	/* the same rank again once let go */
	lock_order_acquire(LOCK_STRIPE, false);
	lock_order_release(LOCK_STRIPE);
}

static void inverted(void)
{
	lock_order_acquire(LOCK_STORAGE, false);
	lock_order_acquire(LOCK_STRIPE, false); /* a stripe while holding a storage */
}

static void two_of_a_kind(void)
{
	lock_order_acquire(LOCK_STRIPE, false);
	lock_order_acquire(LOCK_STRIPE, false); /* stripes are one at a time */
}

static void origin_before_image(void)
{
	lock_order_acquire(LOCK_DEVICE_DRAIN, true);
	lock_order_acquire(LOCK_IMAGE_DRAIN, true);
}

static void release_unheld(void)
{
	lock_order_release(LOCK_CBT_MAP);
}

static void checks(void **state)
{
#ifdef NDEBUG
	skip();
#endif
	assert_int_equal(in_child(in_order), 0);
	for (void (*const *fn)(void) = (void (*const[])(void)){ inverted, two_of_a_kind, origin_before_image,
								 release_unheld, NULL };
	     *fn; fn++) {
		int status = in_child(*fn);

		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGABRT);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(checks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
