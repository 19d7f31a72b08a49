/* Unit tests: devices on a real temporary file (core/device.c, core/backing.c,
 * core/filter.c): range checks, the data path, holes, live attach/detach of
 * the passthrough filter under concurrent I/O, and resizes (the filters' say,
 * and I/O running through them). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/log.h"
#include "core/device.h"
#include "core/extents.h"
#include "core/filter.h"
#include "core/io.h"
#include "filters/filters.h"

#define MIB (1024 * 1024)

struct fixture {
	char path[64];
	struct device *dev;
};

static int make_file(char *path, off_t size)
{
	int fd;

	strcpy(path, "/tmp/bdf-unit.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	if (ftruncate(fd, size) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	log_set_level(LOG_LEVEL_ERROR);
	if (!f || make_file(f->path, 4 * MIB) < 0)
		return -1;
	if (device_open("disk", f->path, false, &f->dev) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	device_put(f->dev);
	unlink(f->path);
	free(f);
	return 0;
}

static void range_checks_are_overflow_safe(void **state)
{
	struct fixture *f = *state;
	char buf[512];

	assert_int_equal(device_size(f->dev), 4 * MIB);
	assert_int_equal(device_check_range(f->dev, 512, 4 * MIB - 512, false), 0);
	assert_int_equal(device_check_range(f->dev, 513, 4 * MIB - 512, false), -EINVAL);
	assert_int_equal(device_check_range(f->dev, 513, 4 * MIB - 512, true), -ENOSPC);
	assert_int_equal(device_check_range(f->dev, 512, UINT64_MAX - 100, false), -EINVAL);
	assert_int_equal(device_check_range(f->dev, UINT64_MAX, 512, false), -EINVAL);
	assert_int_equal(device_pread(f->dev, buf, sizeof(buf), UINT64_MAX - 10, 0), -EINVAL);
	assert_int_equal(device_pwrite(f->dev, buf, sizeof(buf), 4 * MIB, 0), -ENOSPC);
	assert_int_equal(device_pread(f->dev, buf, 0, 0, 0), 0);
}

static void read_only_refuses_writes(void **state)
{
	struct fixture *f = *state;
	struct device *ro;
	char buf[512] = { 0 };

	assert_int_equal(device_open("ro", f->path, true, &ro), 0);
	assert_true(device_readonly(ro));
	assert_int_equal(device_pwrite(ro, buf, 512, 0, 0), -EPERM);
	assert_int_equal(device_trim(ro, 512, 0, 0), -EPERM);
	assert_int_equal(device_zero(ro, 512, 0, 0), -EPERM);
	assert_int_equal(device_pread(ro, buf, 512, 0, 0), 0);
	assert_int_equal(device_flush(ro, 0), 0);
	device_put(ro);
}

static void write_read_zero_trim(void **state)
{
	struct fixture *f = *state;
	char *w = malloc(MIB), *r = malloc(MIB);

	for (int i = 0; i < MIB; i++)
		w[i] = (char)(i * 7 + 3);
	/* unaligned on purpose */
	assert_int_equal(device_pwrite(f->dev, w, 100000, 12345, BDF_FUA), 0);
	assert_int_equal(device_pread(f->dev, r, 100000, 12345, 0), 0);
	assert_memory_equal(w, r, 100000);

	assert_int_equal(device_zero(f->dev, 4096, 16384, 0), 0);
	assert_int_equal(device_pread(f->dev, r, 4096, 16384, 0), 0);
	memset(w, 0, 4096);
	assert_memory_equal(w, r, 4096);

	assert_int_equal(device_zero(f->dev, 8192, 65536, BDF_MAY_TRIM | BDF_FUA), 0);
	assert_int_equal(device_pread(f->dev, r, 8192, 65536, 0), 0);
	assert_memory_equal(w, r, 4096);

	assert_int_equal(device_trim(f->dev, 65536, 0, 0), 0);
	assert_int_equal(device_flush(f->dev, 0), 0);
	assert_int_equal(device_cache(f->dev, MIB, 0, 0), 0);
	free(w);
	free(r);
}

static void extents_find_holes(void **state)
{
	struct fixture *f = *state;
	char buf[65536];
	struct extents *e;
	uint64_t covered = 0;
	bool saw_data = false, saw_hole = false;

	memset(buf, 0xab, sizeof(buf));
	assert_int_equal(device_pwrite(f->dev, buf, sizeof(buf), MIB, 0), 0);
	assert_int_equal(device_trim(f->dev, 4096, 0, 0), 0); /* marks the store maybe-sparse */
	e = extents_new(0, 4 * MIB, 1024);
	assert_int_equal(device_extents(f->dev, 4 * MIB, 0, 0, e), 0);
	for (size_t i = 0; i < extents_count(e); i++) {
		const struct extent *x = extents_get(e, i);

		assert_int_equal(x->offset, covered);
		covered += x->length;
		if (x->type == 0) {
			saw_data = true;
			assert_true(x->offset <= MIB && x->offset + x->length >= MIB + sizeof(buf));
		} else {
			saw_hole = true;
			assert_int_equal(x->type, EXTENT_HOLE | EXTENT_ZERO);
		}
	}
	assert_int_equal(covered, 4 * MIB);
	assert_true(saw_data);
	assert_true(saw_hole);
	extents_free(e);

	/* REQ_ONE: exactly one extent */
	e = extents_new(0, 4 * MIB, 1);
	assert_int_equal(device_extents(f->dev, 4 * MIB, 0, BDF_REQ_ONE, e), 0);
	assert_int_equal(extents_count(e), 1);
	extents_free(e);
}

static void small_and_odd_sizes(void **state)
{
	char path[64];
	struct device *dev;

	assert_int_equal(make_file(path, 511), 0);
	assert_int_equal(device_open("tiny", path, false, &dev), -EINVAL);
	unlink(path);

	assert_int_equal(make_file(path, 4096 + 100), 0);
	assert_int_equal(device_open("odd", path, false, &dev), 0);
	assert_int_equal(device_size(dev), 4096);
	device_put(dev);
	unlink(path);

	assert_int_equal(device_open("missing", "/nonexistent/bdf", false, &dev), -ENOENT);
	assert_int_equal(device_open("dir", "/tmp", false, &dev), -EISDIR);
}

static void attach_detach_rules(void **state)
{
	struct fixture *f = *state;

	assert_null(filter_lookup("no-such-filter"));
	assert_int_equal(device_detach(f->dev, filter_lookup("passthrough")), -ENOENT);
	assert_int_equal(device_attach(f->dev, filter_lookup("passthrough"), NULL), 0);
	assert_true(device_has_filter(f->dev, filter_lookup("passthrough")));
	assert_int_equal(device_attach(f->dev, filter_lookup("passthrough"), NULL), -EALREADY);
	assert_int_equal(device_detach(f->dev, filter_lookup("passthrough")), 0);
	assert_false(device_has_filter(f->dev, filter_lookup("passthrough")));
	assert_int_equal(device_detach(f->dev, filter_lookup("passthrough")), -ENOENT);
}

struct io_thread {
	struct device *dev;
	int id;
	volatile int *stop;
	long rounds;
	int errors;
};

static void *io_loop(void *arg)
{
	struct io_thread *t = arg;
	uint64_t base = (uint64_t)t->id * MIB;
	unsigned char w[8192], r[8192];

	while (!*t->stop) {
		uint64_t off = base + (uint64_t)(t->rounds % 120) * sizeof(w);

		memset(w, (int)(t->rounds & 0xff), sizeof(w));
		if (device_pwrite(t->dev, w, sizeof(w), off, 0) != 0 ||
		    device_pread(t->dev, r, sizeof(r), off, 0) != 0 || memcmp(w, r, sizeof(w)) != 0)
			t->errors++;
		t->rounds++;
	}
	return NULL;
}

static void attach_detach_live_under_load(void **state)
{
	struct fixture *f = *state;
	struct io_thread t[4];
	pthread_t th[4];
	volatile int stop = 0;

	for (int i = 0; i < 4; i++) {
		t[i] = (struct io_thread){ .dev = f->dev, .id = i, .stop = &stop };
		assert_int_equal(pthread_create(&th[i], NULL, io_loop, &t[i]), 0);
	}
	for (int i = 0; i < 300; i++) {
		assert_int_equal(device_attach(f->dev, filter_lookup("passthrough"), NULL), 0);
		usleep(200);
		assert_int_equal(device_detach(f->dev, filter_lookup("passthrough")), 0);
	}
	stop = 1;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(t[i].errors, 0);
		assert_true(t[i].rounds > 0);
	}
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void resize_file_with_size(void **state)
{
	struct fixture *f = *state;
	char buf[512], zero[512] = { 0 };
	uint64_t old = 0;

	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(device_pwrite(f->dev, buf, 512, MIB, 0), 0);

	/* grow: the new part reads zeroes and takes writes up to the new end */
	assert_int_equal(device_resize(f->dev, 8 * MIB, &old), 0);
	assert_int_equal(old, 4 * MIB);
	assert_int_equal(device_size(f->dev), 8 * MIB);
	assert_int_equal(file_size(f->path), 8 * MIB);
	assert_int_equal(device_pread(f->dev, buf, 512, 8 * MIB - 512, 0), 0);
	assert_memory_equal(buf, zero, 512);
	assert_int_equal(device_pwrite(f->dev, buf, 512, 8 * MIB - 512, 0), 0);
	assert_int_equal(device_pwrite(f->dev, buf, 512, 8 * MIB, 0), -ENOSPC);

	/* shrink: what lies past the end is refused, and the file stays cut */
	assert_int_equal(device_resize(f->dev, MIB + 512, NULL), 0);
	assert_int_equal(file_size(f->path), MIB + 512);
	assert_int_equal(device_pread(f->dev, buf, 512, MIB, 0), 0);
	assert_int_equal(buf[0], 0x5a);
	assert_int_equal(device_pread(f->dev, buf, 512, MIB + 512, 0), -EINVAL);
	assert_int_equal(device_pwrite(f->dev, buf, 512, 2 * MIB, 0), -ENOSPC);
	assert_int_equal(device_zero(f->dev, 512, 2 * MIB, 0), -ENOSPC);
	assert_int_equal(file_size(f->path), MIB + 512);

	/* bad sizes change nothing */
	assert_int_equal(device_resize(f->dev, 0, NULL), -EINVAL);
	assert_int_equal(device_resize(f->dev, 511, NULL), -EINVAL);
	assert_int_equal(device_resize(f->dev, 4096 + 1, NULL), -EINVAL);
	assert_int_equal(device_resize(f->dev, (uint64_t)INT64_MAX + 1, NULL), -EINVAL);
	assert_int_equal(device_size(f->dev), MIB + 512);
	assert_int_equal(device_resize(f->dev, 512, NULL), 0); /* one sector is enough */
	assert_int_equal(device_size(f->dev), 512);
}

static void resize_probe(void **state)
{
	struct fixture *f = *state;
	struct device *ro;
	uint64_t old;

	/* the file changed behind the device's back */
	assert_int_equal(truncate(f->path, 6 * MIB + 100), 0);
	assert_int_equal(device_resize(f->dev, DEVICE_SIZE_PROBE, &old), 0);
	assert_int_equal(old, 4 * MIB);
	assert_int_equal(device_size(f->dev), 6 * MIB); /* whole sectors */
	assert_int_equal(file_size(f->path), 6 * MIB + 100); /* a probe writes nothing */
	assert_int_equal(truncate(f->path, 100), 0);
	assert_int_equal(device_resize(f->dev, DEVICE_SIZE_PROBE, NULL), -EINVAL);
	assert_int_equal(device_size(f->dev), 6 * MIB);
	assert_int_equal(truncate(f->path, 2 * MIB), 0);

	/* read-only: a probe yes, a size no */
	assert_int_equal(device_open("ro", f->path, true, &ro), 0);
	assert_int_equal(device_resize(ro, MIB, NULL), -EPERM);
	assert_int_equal(truncate(f->path, 3 * MIB), 0);
	assert_int_equal(device_resize(ro, DEVICE_SIZE_PROBE, NULL), 0);
	assert_int_equal(device_size(ro), 3 * MIB);
	device_put(ro);
}

/* A filter that records what it is told, and refuses when asked to. */
struct resize_seen {
	uint64_t size_before, new_size;
	int calls;
	int answer;
};

static int rs_attach(struct filter *f, void *ctx)
{
	f->priv = ctx;
	return 0;
}

static int rs_resize(struct filter *f, uint64_t new_size)
{
	struct resize_seen *s = f->priv;

	s->calls++;
	s->size_before = device_size(f->dev);
	s->new_size = new_size;
	return s->answer;
}

static const struct filter_ops resize_filter = { .name = "resize-test", .attach = rs_attach, .resize = rs_resize };

static void resize_asks_the_filters(void **state)
{
	struct fixture *f = *state;
	struct resize_seen seen = { 0 };

	assert_int_equal(device_attach(f->dev, &resize_filter, &seen), 0);
	assert_int_equal(device_attach(f->dev, filter_lookup("passthrough"), NULL), 0); /* no op: passes */
	assert_int_equal(device_resize(f->dev, 2 * MIB, NULL), 0);
	assert_int_equal(seen.calls, 1);
	assert_int_equal(seen.size_before, 4 * MIB); /* told before the change */
	assert_int_equal(seen.new_size, 2 * MIB);

	/* the same size: nobody is told (the tracker would lose its map for nothing) */
	assert_int_equal(device_resize(f->dev, DEVICE_SIZE_PROBE, NULL), 0);
	assert_int_equal(device_resize(f->dev, 2 * MIB, NULL), 0);
	assert_int_equal(seen.calls, 1);

	/* a refusal leaves the device and the file as they were */
	seen.answer = -EBUSY;
	assert_int_equal(device_resize(f->dev, 8 * MIB, NULL), -EBUSY);
	assert_int_equal(seen.calls, 2);
	assert_int_equal(device_size(f->dev), 2 * MIB);
	assert_int_equal(file_size(f->path), 2 * MIB);
	assert_int_equal(device_detach(f->dev, filter_lookup("passthrough")), 0);
	assert_int_equal(device_detach(f->dev, &resize_filter), 0);
}

static void *resize_io_loop(void *arg)
{
	struct io_thread *t = arg;
	unsigned char buf[4096];
	uint64_t off;
	int r;

	while (!*t->stop) {
		/* inside the smallest size: always works; past it: may fail, never crashes */
		off = (uint64_t)(t->rounds % 256) * sizeof(buf);
		memset(buf, t->id, sizeof(buf));
		if (device_pwrite(t->dev, buf, sizeof(buf), off, 0) != 0 ||
		    device_pread(t->dev, buf, sizeof(buf), off, 0) != 0)
			t->errors++;
		off = MIB + (uint64_t)(t->rounds % 768) * sizeof(buf);
		r = t->rounds & 1 ? device_pwrite(t->dev, buf, sizeof(buf), off, 0)
				  : device_pread(t->dev, buf, sizeof(buf), off, 0);
		if (r != 0 && r != -ENOSPC && r != -EINVAL)
			t->errors++;
		t->rounds++;
	}
	return NULL;
}

static void resize_under_load(void **state)
{
	struct fixture *f = *state;
	struct io_thread t[4];
	pthread_t th[4];
	volatile int stop = 0;

	for (int i = 0; i < 4; i++) {
		t[i] = (struct io_thread){ .dev = f->dev, .id = i, .stop = &stop };
		assert_int_equal(pthread_create(&th[i], NULL, resize_io_loop, &t[i]), 0);
	}
	for (int i = 0; i < 200; i++) {
		assert_int_equal(device_resize(f->dev, i % 2 ? 4 * MIB : MIB, NULL), 0);
		usleep(200);
	}
	stop = 1;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(t[i].errors, 0);
	}
	/* no write got past a shrink: the file is what the last resize made it */
	assert_int_equal(file_size(f->path), device_size(f->dev));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(range_checks_are_overflow_safe, setup, teardown),
		cmocka_unit_test_setup_teardown(read_only_refuses_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(write_read_zero_trim, setup, teardown),
		cmocka_unit_test_setup_teardown(extents_find_holes, setup, teardown),
		cmocka_unit_test(small_and_odd_sizes),
		cmocka_unit_test_setup_teardown(attach_detach_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(attach_detach_live_under_load, setup, teardown),
		cmocka_unit_test_setup_teardown(resize_file_with_size, setup, teardown),
		cmocka_unit_test_setup_teardown(resize_probe, setup, teardown),
		cmocka_unit_test_setup_teardown(resize_asks_the_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(resize_under_load, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
