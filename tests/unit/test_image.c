/* Unit tests: restore points of version 1 repositories (backup/image.c,
 * backup/image_v1.c). A repository of a full backup and two incrementals is
 * written with repo.c's own writer, each backup's data in an order of its
 * own (reversed, forward, shuffled), over an image whose last block is short;
 * the image at each backup is known here. Reads of every size and alignment,
 * from four threads at once, must be that image; extents must tile it, zero
 * exactly where its blocks are; a damaged block must fail every read that
 * touches it with -EIO and no other; the last usable backup is the default;
 * bad requests fail with their errno. */
#include <errno.h>
#include <fcntl.h>
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

#include "backup/block_list.h"
#include "backup/image.h"
#include "backup/repo.h"

#define BS 4096u
#define NBLK 40u
#define SIZE ((NBLK - 1) * BS + 1000) /* the last block is short */
#define NBACKUPS 3

static char dir[64];
static uint8_t ref[NBACKUPS][SIZE]; /* the image at each backup */

static uint32_t blen(uint64_t b)
{
	return block_length(b, SIZE, BS);
}

static bool block_zero(const uint8_t *img, uint64_t b)
{
	for (uint32_t i = 0; i < blen(b); i++)
		if (img[b * BS + i])
			return false;
	return true;
}

/* Backup N: the blocks LIST holds (at most NBLK), stored from the image
 * ref[N], their data written in ORDER (0 reversed, 1 forward, 2 shuffled). */
static void write_backup(unsigned n, const uint64_t *list, unsigned count, int order)
{
	struct repo_entry e[NBLK];
	struct backup_info info = { .full = n == 0, .parent = n == 0 ? -1 : (int)n - 1, .changes_number = -1 };
	struct backup_writer w;
	unsigned seq[NBLK];
	uint64_t off = 0;
	struct repo *r;

	assert_int_equal(repo_open(dir, REPO_CREATE, BS, &r), 0);
	assert_int_equal(r->n, n);
	assert_int_equal(repo_backup_begin(r, &w), 0);
	for (unsigned i = 0; i < count; i++)
		seq[i] = order == 0 ? count - 1 - i : i;
	if (order == 2)
		for (unsigned i = count; i > 1; i--) {
			unsigned j = (unsigned)rand() % i, x = seq[i - 1];

			seq[i - 1] = seq[j];
			seq[j] = x;
		}
	for (unsigned i = 0; i < count; i++) {
		e[i].block = list[i];
		repo_hash(ref[n] + list[i] * BS, blen(list[i]), e[i].hash);
		e[i].offset = REPO_ZERO_BLOCK;
	}
	for (unsigned k = 0; k < count; k++) {
		unsigned i = seq[k];

		if (block_zero(ref[n], list[i]))
			continue;
		assert_int_equal(pwrite(w.datafd, ref[n] + list[i] * BS, blen(list[i]), (off_t)off), (ssize_t)blen(list[i]));
		e[i].offset = off;
		off += blen(list[i]);
	}
	info.from = strdup("test");
	info.size = SIZE;
	info.block_size = BS;
	info.bytes_stored = off;
	assert_int_equal(repo_backup_commit(&w, &info, e, count), 0);
	free(info.from);
	free(info.time);
	repo_close(r);
}

static void fill(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(rand() % 255 + 1);
}

static int setup(void **state)
{
	uint64_t l0[NBLK], l1[] = { 1, 2, 5, 6, 7, 8, 20, 30, NBLK - 1 }, l2[] = { 3, 6, 9, 10, 11, 12, 13 };
	unsigned n0 = 0;

	strcpy(dir, "/tmp/test_image.XXXXXX");
	assert_non_null(mkdtemp(dir));
	strcat(dir, "/repo");
	srand(7);
	/* 0: data in most blocks, some zero blocks listed as zero, a few not
	 * listed (holes); the short last block holds data. */
	memset(ref[0], 0, SIZE);
	for (uint64_t b = 0; b < NBLK; b++) {
		if (b % 7 == 3)
			continue; /* not listed: zero */
		if (b % 5 != 4)
			fill(ref[0] + b * BS, blen(b));
		l0[n0++] = b; /* listed, zero or not */
	}
	write_backup(0, l0, n0, 0);
	/* 1: new data, data made zero (1, 6), the short last block changed;
	 * the holes of 0 (3, 10, 17, 24, 31, 38) stay. */
	memcpy(ref[1], ref[0], SIZE);
	for (size_t i = 0; i < sizeof(l1) / sizeof(l1[0]); i++)
		fill(ref[1] + l1[i] * BS, blen(l1[i]));
	memset(ref[1] + 1 * BS, 0, BS);
	memset(ref[1] + 6 * BS, 0, BS);
	write_backup(1, l1, sizeof(l1) / sizeof(l1[0]), 1);
	/* 2: a block zero in 1 given data again (6), holes given data (3, 10),
	 * zeros over data (12). */
	memcpy(ref[2], ref[1], SIZE);
	for (size_t i = 0; i < sizeof(l2) / sizeof(l2[0]); i++)
		fill(ref[2] + l2[i] * BS, blen(l2[i]));
	memset(ref[2] + 12 * BS, 0, BS);
	write_backup(2, l2, sizeof(l2) / sizeof(l2[0]), 2);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%.*s'", (int)(strlen(dir) - 5), dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct image *open_at(int64_t at)
{
	struct image_open_opts o = { .repo = dir, .at = at };
	struct image *im = NULL;

	assert_int_equal(image_open(&o, &im), 0);
	return im;
}

struct extents_check {
	const uint8_t *img;
	uint64_t next;
};

static int check_extent(void *opaque, uint64_t offset, uint64_t len, bool zero)
{
	struct extents_check *c = opaque;

	assert_int_equal(offset, c->next);
	assert_true(len > 0);
	/* Whole blocks, but for the range's own ends. */
	for (uint64_t b = offset / BS; b * BS < offset + len; b++)
		assert_int_equal(block_zero(c->img, b), zero);
	c->next = offset + len;
	return 0;
}

static void random_reads(struct image *im, const uint8_t *img, unsigned count)
{
	static __thread uint8_t buf[SIZE];
	unsigned seed = (unsigned)(uintptr_t)&seed;

	for (unsigned i = 0; i < count; i++) {
		uint64_t off = (uint64_t)rand_r(&seed) % SIZE, len = (uint64_t)rand_r(&seed) % (SIZE - off) + 1;

		if (i % 3 == 0)
			len = len % (2 * BS) + 1; /* small ones, often inside one block */
		if (len > SIZE - off)
			len = SIZE - off;
		assert_int_equal(image_read(im, buf, len, off), 0);
		assert_memory_equal(buf, img + off, len);
	}
}

static void each_backup(void **state)
{
	static uint8_t buf[SIZE];

	for (unsigned n = 0; n < NBACKUPS; n++) {
		struct image *im = open_at(n);
		struct extents_check c = { .img = ref[n] };

		assert_int_equal(image_size(im), SIZE);
		assert_int_equal(image_backup(im), n);
		assert_int_equal(image_block_size(im), BS);
		assert_int_equal(image_read(im, buf, SIZE, 0), 0);
		assert_memory_equal(buf, ref[n], SIZE);
		assert_int_equal(image_extents(im, 0, SIZE, check_extent, &c), 0);
		assert_int_equal(c.next, SIZE);
		/* A range inside blocks, and one past the end (clipped). */
		c = (struct extents_check){ .img = ref[n], .next = 5 * BS + 100 };
		assert_int_equal(image_extents(im, 5 * BS + 100, 17 * BS, check_extent, &c), 0);
		assert_int_equal(c.next, 22 * BS + 100);
		c = (struct extents_check){ .img = ref[n], .next = SIZE - 10 };
		assert_int_equal(image_extents(im, SIZE - 10, 1 << 20, check_extent, &c), 0);
		assert_int_equal(c.next, SIZE);
		random_reads(im, ref[n], 2000);
		/* Out of range. */
		assert_int_equal(image_read(im, buf, 1, SIZE), -EINVAL);
		assert_int_equal(image_read(im, buf, 2, SIZE - 1), -EINVAL);
		assert_int_equal(image_read(im, buf, 0, SIZE), 0);
		image_close(im);
	}
	/* The default: the last. */
	struct image *im = open_at(-1);

	assert_int_equal(image_backup(im), NBACKUPS - 1);
	image_close(im);
}

static int stop_early(void *opaque, uint64_t offset, uint64_t len, bool zero)
{
	return ++*(int *)opaque == 2 ? 42 : 0;
}

static void extents_stop(void **state)
{
	struct image *im = open_at(2);
	int calls = 0;

	assert_int_equal(image_extents(im, 0, SIZE, stop_early, &calls), 42);
	assert_int_equal(calls, 2);
	image_close(im);
}

struct reader {
	struct image *im;
	const uint8_t *img;
};

static void *reader(void *arg)
{
	struct reader *r = arg;

	random_reads(r->im, r->img, 3000);
	return NULL;
}

static void threads(void **state)
{
	struct reader r = { .im = open_at(2), .img = ref[2] };
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, &r), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	image_close(r.im);
}

/* Flip a byte of block BLK's copy in backup N's data file. */
static void flip(unsigned n, uint64_t blk)
{
	struct repo_entry *e;
	struct repo *r;
	uint64_t count;
	char path[128];
	uint8_t c;
	int fd;

	assert_int_equal(repo_open(dir, REPO_READ, 0, &r), 0);
	assert_int_equal(repo_read_index(r, n, NULL, &e, &count), 0);
	repo_close(r);
	for (uint64_t i = 0; i < count; i++) {
		if (e[i].block != blk)
			continue;
		snprintf(path, sizeof(path), "%s/%06u/data", dir, n);
		assert_true((fd = open(path, O_RDWR)) >= 0);
		assert_int_equal(pread(fd, &c, 1, (off_t)e[i].offset + 10), 1);
		c ^= 0xff;
		assert_int_equal(pwrite(fd, &c, 1, (off_t)e[i].offset + 10), 1);
		close(fd);
		free(e);
		return;
	}
	fail_msg("block %u not in backup %u", (unsigned)blk, n);
}

static void damage(void **state)
{
	static uint8_t buf[SIZE];
	struct image *im = open_at(2);

	/* Block 8 comes from backup 1 at backup 2. A cut read of a damaged
	 * block fails every time: it is never cached. */
	flip(1, 8);
	assert_int_equal(image_read(im, buf, SIZE, 0), -EIO);
	assert_int_equal(image_read(im, buf, BS, 8 * BS), -EIO);
	assert_int_equal(image_read(im, buf, 3 * BS, 7 * BS), -EIO);
	assert_int_equal(image_read(im, buf, 1, 9 * BS - 1), -EIO);
	assert_int_equal(image_read(im, buf, 100, 8 * BS + 5), -EIO);
	assert_int_equal(image_read(im, buf, 100, 8 * BS + 5), -EIO);
	/* Its neighbours, and the rest, read as before. */
	assert_int_equal(image_read(im, buf, 8 * BS, 0), 0);
	assert_memory_equal(buf, ref[2], 8 * BS);
	assert_int_equal(image_read(im, buf, SIZE - 9 * BS, 9 * BS), 0);
	assert_memory_equal(buf, ref[2] + 9 * BS, SIZE - 9 * BS);
	image_close(im);
	/* Backup 0 holds its own copy of block 8: undamaged. */
	im = open_at(0);
	assert_int_equal(image_read(im, buf, SIZE, 0), 0);
	assert_memory_equal(buf, ref[0], SIZE);
	image_close(im);
	flip(1, 8); /* repaired */
}

static void bad_opens(void **state)
{
	struct image_open_opts o = { .repo = dir, .at = NBACKUPS };
	struct image *im = (struct image *)1;
	char path[128], v2[80];
	FILE *f;

	assert_int_equal(image_open(&o, &im), -ENOENT);
	assert_null(im);
	o = (struct image_open_opts){ .repo = dir, .at = 0, .key_file = "/dev/null" };
	assert_int_equal(image_open(&o, &im), -EINVAL);
	o = (struct image_open_opts){ .repo = "/nonexistent/repo", .at = 0 };
	assert_int_equal(image_open(&o, &im), -ENOENT);
	o = (struct image_open_opts){ .repo = "s3://bucket/prefix", .at = 0 };
	assert_true(image_open(&o, &im) < 0);
	/* A version 2 repo.json that is not one (no block size), and a
	 * version this build does not know. */
	snprintf(v2, sizeof(v2), "%.*s/v2", (int)(strlen(dir) - 5), dir);
	assert_int_equal(mkdir(v2, 0755), 0);
	snprintf(path, sizeof(path), "%s/repo.json", v2);
	assert_non_null(f = fopen(path, "w"));
	fputs("{ \"format\": \"bdfilter-backup\", \"version\": 2 }", f);
	fclose(f);
	o = (struct image_open_opts){ .repo = v2, .at = 0 };
	assert_int_equal(image_open(&o, &im), -EINVAL);
	assert_non_null(f = fopen(path, "w"));
	fputs("{ \"format\": \"bdfilter-backup\", \"version\": 3 }", f);
	fclose(f);
	assert_int_equal(image_open(&o, &im), -EINVAL);
}

/* Last: it breaks backup 2 for good. */
static void last_usable(void **state)
{
	char path[128];
	struct image *im;
	FILE *f;

	snprintf(path, sizeof(path), "%s/000002/manifest.json", dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("{}", f);
	fclose(f);
	im = open_at(-1);
	assert_int_equal(image_backup(im), 1);
	image_close(im);
	struct image_open_opts o = { .repo = dir, .at = 2 };
	assert_int_equal(image_open(&o, &im), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_backup), cmocka_unit_test(extents_stop), cmocka_unit_test(threads),
		cmocka_unit_test(damage),      cmocka_unit_test(bad_opens),    cmocka_unit_test(last_usable),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
