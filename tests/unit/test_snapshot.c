/* Unit tests: snapshots in-process (blksnap/snapshot.c, tracker.c, image.c
 * over core/): a device with a tracker in a registry, snapshots created,
 * taken and destroyed through the same calls the control handlers make.
 *
 * Allocation failures are injected with the linker's --wrap=calloc: a calloc
 * of exactly fail_calloc_bytes bytes fails (the CBT map's reset allocates its
 * maps with calloc(block_count, 1)). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "blksnap/blksnap.h"
#include "blksnap/params.h"
#include "blksnap/snapshot.h"
#include "blksnap/tracker.h"
#include "common/log.h"
#include "core/device.h"
#include "core/extents.h"
#include "core/registry.h"

#define MIB (1024ull * 1024)

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

static size_t fail_calloc_bytes;

void *__wrap_calloc(size_t n, size_t size)
{
	if (fail_calloc_bytes && n * size == fail_calloc_bytes)
		return NULL;
	return __real_calloc(n, size);
}

struct fixture {
	char dir[64], img[96], diff[96];
	struct params params;
	struct registry *reg;
	struct blksnap bs;
	struct device *dev;
};

static void make_file(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	log_set_level(LOG_LEVEL_ERROR);
	strcpy(f->dir, "/tmp/bdf-unit-snap.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->img, sizeof(f->img), "%s/d.img", f->dir);
	snprintf(f->diff, sizeof(f->diff), "%s/diff.img", f->dir);
	make_file(f->img, 4 * MIB);
	make_file(f->diff, 64 * MIB);
	params_defaults(&f->params);
	assert_int_equal(registry_new(&f->reg), 0);
	blksnap_init(&f->bs, &f->params, f->reg);
	assert_int_equal(device_open("d", f->img, false, &f->dev), 0);
	assert_int_equal(device_attach(f->dev, &tracker_filter_ops, &f->bs), 0);
	assert_int_equal(registry_add(f->reg, f->dev), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	fail_calloc_bytes = 0;
	blksnap_fini(&f->bs);
	device_put(f->dev);
	registry_free(f->reg);
	unlink(f->img);
	unlink(f->diff);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Create, give storage and take a snapshot of d: 0 and its id, or the error. */
static int take(struct fixture *f, uuid_t id)
{
	const char *devs[] = { "d" };
	char err[256];
	int r;

	r = snapshot_create(&f->bs, devs, 1, NULL, 0, id, err, sizeof(err));
	if (r == 0)
		r = snapshot_append_storage(&f->bs, id, f->diff, NULL, 0, err, sizeof(err));
	if (r == 0)
		r = snapshot_take(&f->bs, id, err, sizeof(err));
	return r;
}

static void destroy(struct fixture *f, const uuid_t id)
{
	char err[256];

	assert_int_equal(snapshot_destroy(&f->bs, id, err, sizeof(err)), 0);
}

static int count_context(const char *name, const char *desc, void *opaque)
{
	(*(int *)opaque)++;
	return 0;
}

/* How many contexts the image publishes. */
static int image_contexts(struct fixture *f)
{
	struct device *img = registry_get(f->reg, "d-image");
	int n = 0;

	assert_non_null(img);
	assert_int_equal(device_list_contexts(img, count_context, &n), 0);
	device_put(img);
	return n;
}

/* A take whose CBT reset cannot allocate (ENOMEM) still takes the snapshot,
 * but its image must not publish the map it kept from before: that map says
 * nothing of the writes since the last take, and a backup reading it would
 * miss them. Asked by name, the old contexts fail instead of answering. */
static void failed_reset_publishes_no_changes(void **state)
{
	struct fixture *f = *state;
	struct cbt_info info;
	struct extents *e;
	struct device *img;
	char name[128], gen[37];
	uuid_t id;

	/* two takes: the second image publishes G/0 and G/1 */
	assert_int_equal(take(f, id), 0);
	destroy(f, id);
	assert_int_equal(take(f, id), 0);
	assert_int_equal(image_contexts(f), 2);
	destroy(f, id);
	assert_int_equal(tracker_cbtinfo(f->dev, &info), 0);
	uuid_unparse_lower(info.generation_id, gen);

	/* a resize corrupts the map; the next take must reset it, and cannot */
	assert_int_equal(device_resize(f->dev, 8 * MIB, NULL), 0);
	fail_calloc_bytes = 8 * MIB / 65536;
	assert_int_equal(take(f, id), 0);
	fail_calloc_bytes = 0;
	assert_int_equal(tracker_cbtinfo(f->dev, &info), 0);
	assert_true(info.corrupted);
	assert_int_equal(image_contexts(f), 0);
	img = registry_get(f->reg, "d-image");
	assert_non_null(img);
	assert_null(strstr(device_description(img), "generation="));
	e = extents_new(0, 4 * MIB, 16);
	for (int n = 0; n < 3; n++) {
		snprintf(name, sizeof(name), "qemu:dirty-bitmap:%s/%d", gen, n);
		assert_int_not_equal(device_context_extents(img, name, 4 * MIB, 0, 0, e), 0);
	}
	extents_free(e);
	device_put(img);
	destroy(f, id);

	/* the take after that resets the map: a new generation, numbered 1 */
	assert_int_equal(take(f, id), 0);
	assert_int_equal(tracker_cbtinfo(f->dev, &info), 0);
	assert_false(info.corrupted);
	assert_int_equal(info.changes_number, 1);
	assert_int_equal(image_contexts(f), 1);
	destroy(f, id);
}

/* A snapshot holds its devices' trackers from create to destroy: detach and
 * removal refuse (under the drain, where a take could not slip between the
 * check and the change), and nothing changes. */
static void a_snapshot_holds_its_trackers(void **state)
{
	struct fixture *f = *state;
	const char *devs[] = { "d" };
	char err[256];
	uuid_t id;

	assert_int_equal(snapshot_create(&f->bs, devs, 1, NULL, 0, id, err, sizeof(err)), 0);
	assert_int_equal(device_detach(f->dev, &tracker_filter_ops), -EBUSY);
	assert_int_equal(registry_remove(f->reg, "d"), -EBUSY);
	assert_int_equal(device_kill(f->dev), -EBUSY);
	assert_int_equal(device_resize(f->dev, 8 * MIB, NULL), -EBUSY);
	assert_true(device_has_filter(f->dev, &tracker_filter_ops));
	assert_int_equal(snapshot_append_storage(&f->bs, id, f->diff, NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(snapshot_take(&f->bs, id, err, sizeof(err)), 0);
	assert_int_equal(device_detach(f->dev, &tracker_filter_ops), -EBUSY);
	assert_int_equal(registry_remove(f->reg, "d"), -EBUSY);
	/* images are the snapshot's: users cannot remove them */
	assert_int_equal(registry_remove(f->reg, "d-image"), -EBUSY);
	destroy(f, id);
	assert_int_equal(device_detach(f->dev, &tracker_filter_ops), 0);
	assert_int_equal(device_attach(f->dev, &tracker_filter_ops, &f->bs), 0);
	/* a device without a tracker cannot join a snapshot */
	assert_int_equal(device_detach(f->dev, &tracker_filter_ops), 0);
	assert_int_equal(snapshot_create(&f->bs, devs, 1, NULL, 0, id, err, sizeof(err)), -ENOENT);
	/* a removed device cannot either, even by a reference taken before */
	assert_int_equal(device_attach(f->dev, &tracker_filter_ops, &f->bs), 0);
	assert_int_equal(registry_remove(f->reg, "d"), 0);
	assert_int_equal(device_filter_hold(f->dev, &tracker_filter_ops), -ENODEV);
	assert_int_equal(device_attach(f->dev, &tracker_filter_ops, &f->bs), -ENODEV);
	assert_int_equal(snapshot_create(&f->bs, devs, 1, NULL, 0, id, err, sizeof(err)), -ENODEV);
}

/* An export that cannot serve images (an observer that fails for them). */
static bool refuse_images;

static int refusing_observer(void *opaque, struct device *dev)
{
	return refuse_images && strstr(device_name(dev), "-image") ? -ENOMEM : 0;
}

/* A take happens whole or not at all: when an image cannot be added, the take
 * fails before its instant, and nothing changed: no image, the CBT where it
 * was, no copy-before-write armed; a retry then works. */
static void a_take_that_fails_changes_nothing(void **state)
{
	struct fixture *f = *state;
	struct registry_observer obs = { .added = refusing_observer };
	struct cbt_info before, after;
	struct snapshot_info si;
	struct device *img;
	char err[256];
	uint8_t buf[4096];
	uuid_t id;

	assert_int_equal(registry_observe(f->reg, &obs), 0);
	assert_int_equal(tracker_cbtinfo(f->dev, &before), 0);
	refuse_images = true;
	assert_int_equal(take(f, id), -ENOMEM);
	refuse_images = false;
	assert_null(registry_get(f->reg, "d-image"));
	assert_int_equal(tracker_cbtinfo(f->dev, &after), 0);
	assert_int_equal(after.changes_number, before.changes_number);
	assert_memory_equal(after.generation_id, before.generation_id, sizeof(uuid_t));
	/* a write copies nothing: no diff area is armed */
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(device_pwrite(f->dev, buf, sizeof(buf), 0, 0), 0);
	assert_int_equal(snapshot_device_info(&f->bs, "d", &si, err, sizeof(err)), 0);
	assert_int_equal(si.chunks_copied, 0);
	assert_string_equal(si.image, "");
	/* the same snapshot can be taken now */
	assert_int_equal(snapshot_take(&f->bs, id, err, sizeof(err)), 0);
	img = registry_get(f->reg, "d-image");
	assert_non_null(img);
	assert_non_null(strstr(device_description(img), "generation="));
	device_put(img);
	destroy(f, id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(failed_reset_publishes_no_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(a_snapshot_holds_its_trackers, setup, teardown),
		cmocka_unit_test_setup_teardown(a_take_that_fails_changes_nothing, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
