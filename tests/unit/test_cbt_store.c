/* Unit tests: the CBT state file (filters/cbt_store.c): a round trip keeps the
 * generation, numbers and maps; a bad magic, version, size or checksum, a file
 * not CLEAN, another capacity or geometry are refused; save and remove on disk
 * leave no temporary file behind. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include "common/bytes.h"
#include "blksnap/cbt_map.h"
#include "blksnap/cbt_store.h"
#include "blksnap/params.h"

#define MiB (1024ull * 1024)
#define CAP (4 * MiB) /* 64 blocks of 64 KiB */

static struct params defaults(void)
{
	struct params p;

	params_defaults(&p);
	return p;
}

/* A map with two takes behind it and marks in both maps. */
static struct cbt_map *sample(void)
{
	struct params p = defaults();
	struct cbt_map *m;

	assert_int_equal(cbt_map_create(&m, CAP, &p), 0);
	assert_int_equal(cbt_map_mark(m, 0, 4096), 0);
	cbt_map_switch(m, CAP, &p);
	assert_int_equal(cbt_map_mark(m, 10 * 65536, 3 * 65536), 0);
	cbt_map_switch(m, CAP, &p);
	assert_int_equal(cbt_map_mark(m, CAP - 1, 1), 0);
	return m;
}

static void assert_same(struct cbt_map *a, struct cbt_map *b)
{
	assert_int_equal(a->device_capacity, b->device_capacity);
	assert_int_equal(a->blk_size_shift, b->blk_size_shift);
	assert_int_equal(a->blk_count, b->blk_count);
	assert_memory_equal(a->generation_id, b->generation_id, sizeof(uuid_t));
	assert_int_equal(a->snap_number_active, b->snap_number_active);
	assert_int_equal(a->snap_number_previous, b->snap_number_previous);
	assert_int_equal(a->is_corrupted, b->is_corrupted);
	assert_memory_equal(a->read_map, b->read_map, a->blk_count);
	assert_memory_equal(a->write_map, b->write_map, a->blk_count);
}

static int decode(const uint8_t *buf, size_t len, uint64_t cap, const struct params *p)
{
	struct cbt_map *m = NULL;
	int v = cbt_store_decode(buf, len, cap, p, &m);

	if (v == CBT_STORE_OK || v == CBT_STORE_CHECKPOINT)
		cbt_map_destroy(m);
	else
		assert_null(m);
	return v;
}

/* Recompute the checksum after a test changed the header, so that the check
 * under test is the one that refuses the file. */
static void reseal(uint8_t *buf, size_t len)
{
	uint32_t c = (uint32_t)crc32_z(crc32_z(0, NULL, 0), buf, 60);

	c = (uint32_t)crc32_z(c, buf + CBT_STORE_HEADER_SIZE, len - CBT_STORE_HEADER_SIZE);
	put_le32(buf + 60, c);
}

static void round_trip(void **state)
{
	struct params p = defaults();
	struct cbt_map *m = sample(), *back = NULL;
	uint8_t *buf;
	size_t len;

	assert_int_equal(cbt_store_encode(m, true, &buf, &len), 0);
	assert_int_equal(len, CBT_STORE_HEADER_SIZE + 2 * 64);
	assert_memory_equal(buf, CBT_STORE_MAGIC, 8);
	assert_int_equal(get_le32(buf + 8), CBT_STORE_VERSION);
	assert_int_equal(get_le32(buf + 12), CBT_STORE_FLAG_CLEAN);
	assert_int_equal(get_le64(buf + 16), CAP);
	assert_int_equal(cbt_store_decode(buf, len, CAP, &p, &back), CBT_STORE_OK);
	assert_same(m, back);
	assert_int_equal(back->snap_number_previous, 2);
	assert_int_equal(back->read_map[10], 2);
	/* the loaded map goes on as the saved one would have */
	cbt_map_switch(m, CAP, &p);
	cbt_map_switch(back, CAP, &p);
	assert_same(m, back);
	cbt_map_destroy(back);
	free(buf);

	/* a corrupted map stays corrupted */
	cbt_map_set_corrupted(m);
	assert_int_equal(cbt_store_encode(m, true, &buf, &len), 0);
	assert_int_equal(cbt_store_decode(buf, len, CAP, &p, &back), CBT_STORE_OK);
	assert_true(back->is_corrupted);
	cbt_map_destroy(back);
	free(buf);
	cbt_map_destroy(m);
}

static void bad_magic_and_version(void **state)
{
	struct params p = defaults();
	struct cbt_map *m = sample();
	uint8_t *buf;
	size_t len;

	assert_int_equal(cbt_store_encode(m, true, &buf, &len), 0);
	buf[0] ^= 0xff;
	reseal(buf, len);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_BAD_MAGIC);
	buf[0] ^= 0xff;
	put_le32(buf + 8, CBT_STORE_VERSION + 1);
	reseal(buf, len);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_BAD_VERSION);
	put_le32(buf + 8, CBT_STORE_VERSION);
	reseal(buf, len);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_OK);
	free(buf);
	cbt_map_destroy(m);
}

static void short_and_long(void **state)
{
	struct params p = defaults();
	struct cbt_map *m = sample();
	uint8_t *buf, *big;
	size_t len;

	assert_int_equal(cbt_store_encode(m, true, &buf, &len), 0);
	assert_int_equal(decode(buf, 0, CAP, &p), CBT_STORE_SHORT);
	assert_int_equal(decode(buf, CBT_STORE_HEADER_SIZE - 1, CAP, &p), CBT_STORE_SHORT);
	assert_int_equal(decode(buf, CBT_STORE_HEADER_SIZE, CAP, &p), CBT_STORE_SHORT);
	assert_int_equal(decode(buf, len - 1, CAP, &p), CBT_STORE_SHORT);
	big = calloc(1, len + 1);
	memcpy(big, buf, len);
	assert_int_equal(decode(big, len + 1, CAP, &p), CBT_STORE_LONG);
	/* a block count that overflows any size */
	put_le64(buf + 32, UINT64_MAX);
	reseal(buf, len);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_SHORT);
	free(big);
	free(buf);
	cbt_map_destroy(m);
}

static void checksum_mismatch(void **state)
{
	struct params p = defaults();
	struct cbt_map *m = sample();
	uint8_t *buf;
	size_t len;

	assert_int_equal(cbt_store_encode(m, true, &buf, &len), 0);
	/* a byte of the header, of each map, of the checksum itself */
	const size_t at[] = { 16, 40, 56, CBT_STORE_HEADER_SIZE + 3, len - 1, 60 };

	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		buf[at[i]] ^= 0x40;
		assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_CHECKSUM);
		buf[at[i]] ^= 0x40;
	}
	/* the CLEAN flag is covered too: a flipped flag is not a clean file */
	buf[12] ^= CBT_STORE_FLAG_CLEAN;
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_CHECKSUM);
	buf[12] ^= CBT_STORE_FLAG_CLEAN;
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_OK);
	free(buf);
	cbt_map_destroy(m);
}

/* A checkpoint (LOGGED without CLEAN) gives its map and says so; a flag
 * no version knows is refused. */
static void checkpoint(void **state)
{
	struct params p = defaults();
	struct cbt_map *m = sample(), *back = NULL;
	uint8_t *buf;
	size_t len;

	assert_int_equal(cbt_store_encode(m, CBT_STORE_FLAG_LOGGED, &buf, &len), 0);
	assert_int_equal(cbt_store_decode(buf, len, CAP, &p, &back), CBT_STORE_CHECKPOINT);
	assert_same(m, back);
	cbt_map_destroy(back);
	assert_int_equal(decode(buf, len, CAP + 512, &p), CBT_STORE_CAPACITY);
	buf[12] |= 0x4;
	reseal(buf, len);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_INVALID);
	free(buf);
	assert_int_equal(cbt_store_encode(m, CBT_STORE_FLAG_LOGGED | CBT_STORE_FLAG_CLEAN, &buf, &len), 0);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_OK);
	free(buf);
	cbt_map_destroy(m);
}

static void not_clean_capacity_geometry(void **state)
{
	struct params p = defaults(), q = defaults();
	struct cbt_map *m = sample();
	uint8_t *buf;
	size_t len;

	assert_int_equal(cbt_store_encode(m, false, &buf, &len), 0);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_NOT_CLEAN);
	free(buf);
	assert_int_equal(cbt_store_encode(m, true, &buf, &len), 0);
	assert_int_equal(decode(buf, len, CAP + 512, &p), CBT_STORE_CAPACITY);
	assert_int_equal(decode(buf, len, CAP - 65536, &p), CBT_STORE_CAPACITY);
	q.tracking_block_minimum_shift = 17;
	assert_int_equal(decode(buf, len, CAP, &q), CBT_STORE_GEOMETRY);
	/* fields no map has */
	buf[56] = 0; /* active 0 */
	reseal(buf, len);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_INVALID);
	buf[56] = 3;
	put_le32(buf + 12, CBT_STORE_FLAG_CLEAN | 0x100);
	reseal(buf, len);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_INVALID);
	put_le32(buf + 12, CBT_STORE_FLAG_CLEAN);
	reseal(buf, len);
	assert_int_equal(decode(buf, len, CAP, &p), CBT_STORE_OK);
	free(buf);
	cbt_map_destroy(m);
}

static void on_disk(void **state)
{
	struct params p = defaults();
	struct cbt_map *m = sample(), *back = NULL;
	char dir[] = "/tmp/test_cbt_store.XXXXXX", *path, *tmp, *abs = NULL;
	struct stat st;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	path = cbt_store_path(dir, "disk");
	assert_non_null(path);
	assert_int_equal(asprintf(&tmp, "%s.tmp", path) > 0, 1);
	assert_int_equal(cbt_store_load(path, CAP, &p, &back), CBT_STORE_MISSING);

	/* in use, then clean */
	assert_int_equal(cbt_store_save(path, m, false), 0);
	assert_int_equal(cbt_store_load(path, CAP, &p, &back), CBT_STORE_NOT_CLEAN);
	assert_int_equal(cbt_store_save(path, m, true), 0);
	assert_int_equal(stat(tmp, &st), -1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(cbt_store_load(path, CAP, &p, &back), CBT_STORE_OK);
	assert_same(m, back);
	cbt_map_destroy(back);

	/* a short file on disk */
	assert_int_equal(truncate(path, 100), 0);
	assert_int_equal(cbt_store_load(path, CAP, &p, &back), CBT_STORE_SHORT);
	/* an empty one */
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(cbt_store_load(path, CAP, &p, &back), CBT_STORE_SHORT);

	/* a save that cannot write leaves the old file as it was */
	assert_int_equal(cbt_store_save(path, m, true), 0);
	assert_int_equal(mkdir(tmp, 0700), 0); /* PATH.tmp cannot be opened for writing */
	assert_int_not_equal(cbt_store_save(path, m, false), 0);
	assert_int_equal(cbt_store_load(path, CAP, &p, &back), CBT_STORE_OK);
	cbt_map_destroy(back);
	assert_int_equal(rmdir(tmp), 0);

	assert_int_equal(cbt_store_remove(path), 0);
	assert_int_equal(cbt_store_remove(path), 0); /* none is fine */
	assert_int_equal(cbt_store_load(path, CAP, &p, &back), CBT_STORE_MISSING);

	/* the state directory: made if missing, absolute, refused if a file */
	char *sub;

	int lock_fd = -1, lock_fd2 = -1;

	assert_int_equal(asprintf(&sub, "%s/state", dir) > 0, 1);
	assert_int_equal(cbt_store_dir_prepare(sub, &abs, &lock_fd), 0);
	assert_int_equal(stat(sub, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(abs[0], '/');
	free(abs);
	/* one daemon per directory */
	assert_int_equal(cbt_store_dir_prepare(sub, &abs, &lock_fd2), -EBUSY);
	close(lock_fd);
	assert_int_equal(cbt_store_dir_prepare(sub, &abs, &lock_fd2), 0);
	free(abs);
	close(lock_fd2);
	assert_int_equal(rmdir(sub), 0);
	f = fopen(sub, "w");
	fclose(f);
	assert_int_equal(cbt_store_dir_prepare(sub, &abs, &lock_fd), -ENOTDIR);
	unlink(sub);
	free(sub);

	assert_int_equal(rmdir(dir), 0);
	free(tmp);
	free(path);
	cbt_map_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),
		cmocka_unit_test(bad_magic_and_version),
		cmocka_unit_test(short_and_long),
		cmocka_unit_test(checksum_mismatch),
		cmocka_unit_test(not_clean_capacity_geometry),
		cmocka_unit_test(checkpoint),
		cmocka_unit_test(on_disk),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
