/* Unit tests: the dirty-region log (dirtylog/dirty_log.c): the config's
 * checks; a core log through resume, marks, clears and resync to the end;
 * the three sync modes; calls refused before resume and after suspend; the
 * priority of regions asked about; a disk log's bytes on disk, read back
 * with pread, after resume, mark_flush and clear + flush; a restart, a
 * grown device, a bad version, a file too small; the mark_flush fast path
 * and a clear-only flush (stats); eight threads' group commit; a write
 * error (RLIMIT_FSIZE below the log's size); the status lines. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/log.h"
#include "dirtylog/dirty_log.h"

#define RS 8u			/* region size in sectors for most tests */
#define MAGIC 0x4D695272u

/* ---- helpers ---- */

/* A temporary file's path (the file exists, empty); the caller unlinks. */
static void temp_path(char *path, size_t len)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	int fd;

	snprintf(path, len, "%s/bdf-test-dirtylog.XXXXXX", dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
}

static struct dirty_log *make(const char *type, uint64_t regions, enum dirty_log_sync sync,
			      const char *path, bool known)
{
	struct dirty_log_config cfg = {
		.name = "test",
		.type = type,
		.dev_sectors = regions * RS,
		.region_sectors = RS,
		.sync = sync,
		.disk_path = path,
		.known = known,
	};
	struct dirty_log *log = NULL;

	assert_int_equal(dirty_log_create(&log, &cfg), 0);
	assert_non_null(log);
	return log;
}

static struct dirty_log *make_resumed(const char *type, uint64_t regions, enum dirty_log_sync sync,
				      const char *path, bool known)
{
	struct dirty_log *log = make(type, regions, sync, path, known);

	assert_int_equal(dirty_log_resume(log), 0);
	return log;
}

static void read_disk(const char *path, uint8_t *buf, size_t len)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, 0), (ssize_t)len);
	close(fd);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint64_t read_disk_header_nr(const char *path)
{
	uint8_t d[16];

	read_disk(path, d, sizeof(d));
	assert_int_equal(le32(d), MAGIC);
	return le64(d + 8);
}

/* The header on disk is dm-log's: magic, version 2, NR regions. */
static void check_header(const uint8_t *d, uint64_t nr)
{
	assert_int_equal(le32(d), MAGIC);
	assert_int_equal(le32(d + 4), 2);
	assert_int_equal(le64(d + 8), nr);
}

static bool disk_clean(const uint8_t *d, uint64_t region)
{
	return (d[1024 + region / 8] >> (region % 8)) & 1;
}

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static struct dirty_log_stats stats(struct dirty_log *log)
{
	struct dirty_log_stats st;

	dirty_log_get_stats(log, &st);
	return st;
}

/* Resync every region to the end, then clear them all: every region clean. */
static void resync_all(struct dirty_log *log)
{
	uint64_t g, n = dirty_log_region_count(log);
	int r;

	while ((r = dirty_log_get_resync_work(log, &g)) == 1)
		assert_int_equal(dirty_log_set_region_sync(log, g, true), 0);
	assert_int_equal(r, 0);
	assert_int_equal(dirty_log_sync_count(log), n);
	for (g = 0; g < n; g++)
		assert_int_equal(dirty_log_clear(log, &g, 1), 0);
}

/* ---- config ---- */

static void config_validation(void **state)
{
	struct dirty_log_config cfg = {
		.name = "bad", .type = "core", .dev_sectors = 1024, .region_sectors = 8,
	};
	struct dirty_log *log = (struct dirty_log *)&cfg;

	cfg.region_sectors = 12;	/* not a power of two */
	assert_int_equal(dirty_log_create(&log, &cfg), -EINVAL);
	assert_null(log);
	cfg.region_sectors = 0;
	assert_int_equal(dirty_log_create(&log, &cfg), -EINVAL);
	cfg.region_sectors = 1;		/* a power of two, but dm-log wants >= 2 */
	assert_int_equal(dirty_log_create(&log, &cfg), -EINVAL);
	cfg.region_sectors = 2048;	/* larger than the device */
	assert_int_equal(dirty_log_create(&log, &cfg), -EINVAL);
	cfg.region_sectors = 8;
	cfg.dev_sectors = 0;
	assert_int_equal(dirty_log_create(&log, &cfg), -EINVAL);
	cfg.dev_sectors = 1024;
	cfg.type = "mirror";
	assert_int_equal(dirty_log_create(&log, &cfg), -EINVAL);
	cfg.type = "disk";		/* no disk path */
	assert_int_equal(dirty_log_create(&log, &cfg), -EINVAL);
	cfg.type = "core";
	cfg.disk_path = "/tmp/x";	/* a core log with a disk */
	assert_int_equal(dirty_log_create(&log, &cfg), -EINVAL);
	assert_null(log);

	/* The limits themselves are good: region == device, region 2. */
	cfg.disk_path = NULL;
	cfg.region_sectors = 1024;
	assert_int_equal(dirty_log_create(&log, &cfg), 0);
	assert_int_equal(dirty_log_region_count(log), 1);
	dirty_log_destroy(log);
	cfg.region_sectors = 2;
	cfg.dev_sectors = 1001;		/* a partial last region counts */
	assert_int_equal(dirty_log_create(&log, &cfg), 0);
	assert_int_equal(dirty_log_region_count(log), 501);
	assert_int_equal(dirty_log_region_sectors(log), 2);
	dirty_log_destroy(log);
}

/* ---- core log ---- */

static void core_life(void **state)
{
	struct dirty_log *log = make("core", 10, DIRTY_LOG_SYNC_DEFAULT, NULL, false);
	uint64_t g, bad[2] = { 1, 10 }, three = 3;
	struct dirty_log_stats st;

	assert_int_equal(dirty_log_resume(log), 0);
	assert_int_equal(dirty_log_resume(log), 0);	/* again: nothing changes */
	st = stats(log);
	assert_int_equal(st.state, DIRTY_LOG_RESUMED);
	assert_int_equal(st.region_count, 10);
	/* dm-log's core log: clean (nothing written yet), none in sync. */
	assert_int_equal(st.dirty_count, 0);
	assert_int_equal(st.sync_count, 0);
	assert_int_equal(dirty_log_is_clean(log, 0), 1);
	assert_int_equal(dirty_log_in_sync(log, 0), 0);

	assert_int_equal(dirty_log_mark(log, &three, 1), 0);
	assert_int_equal(dirty_log_is_clean(log, 3), 0);
	assert_int_equal(stats(log).dirty_count, 1);
	/* Not in sync: the clear leaves it dirty (cmirrord). */
	assert_int_equal(dirty_log_clear(log, &three, 1), 0);
	assert_int_equal(dirty_log_is_clean(log, 3), 0);
	assert_int_equal(dirty_log_flush(log), 0);
	assert_int_equal(dirty_log_mark_flush(log, &three, 1), 0);

	/* Several regions recover at once. */
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 0);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 1);
	assert_int_equal(dirty_log_set_region_sync(log, 1, true), 0);
	assert_int_equal(dirty_log_set_region_sync(log, 0, true), 0);
	assert_int_equal(dirty_log_sync_count(log), 2);
	/* Twice in sync counts once. */
	assert_int_equal(dirty_log_set_region_sync(log, 0, true), 0);
	assert_int_equal(dirty_log_sync_count(log), 2);
	for (uint64_t want = 2; want < 10; want++) {
		assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
		assert_int_equal(g, want);
		assert_int_equal(dirty_log_set_region_sync(log, g, true), 0);
	}
	assert_int_equal(dirty_log_get_resync_work(log, &g), 0);
	assert_int_equal(dirty_log_sync_count(log), 10);
	for (g = 0; g < 10; g++)
		assert_int_equal(dirty_log_in_sync(log, g), 1);

	/* In sync now: the clear takes. */
	assert_int_equal(dirty_log_clear(log, &three, 1), 0);
	assert_int_equal(dirty_log_is_clean(log, 3), 1);

	/* Out of sync again; the count follows, once. */
	assert_int_equal(dirty_log_set_region_sync(log, 4, false), 0);
	assert_int_equal(dirty_log_set_region_sync(log, 4, false), 0);
	assert_int_equal(dirty_log_sync_count(log), 9);
	assert_int_equal(dirty_log_in_sync(log, 4), 0);

	/* Out of range: -EINVAL, and a bad region in a batch applies none. */
	assert_int_equal(dirty_log_is_clean(log, 10), -EINVAL);
	assert_int_equal(dirty_log_in_sync(log, 10), -EINVAL);
	assert_int_equal(dirty_log_set_region_sync(log, 10, true), -EINVAL);
	assert_int_equal(dirty_log_mark(log, bad, 2), -EINVAL);
	assert_int_equal(dirty_log_is_clean(log, 1), 1);
	assert_int_equal(dirty_log_mark_flush(log, bad, 2), -EINVAL);
	assert_int_equal(dirty_log_is_clean(log, 1), 1);
	dirty_log_destroy(log);
}

static void core_sync_modes(void **state)
{
	struct dirty_log *log;
	uint64_t g, n;

	log = make("core", 40, DIRTY_LOG_NOSYNC, NULL, false);
	assert_int_equal(dirty_log_sync_count(log), 40);	/* before resume too */
	assert_int_equal(dirty_log_resume(log), 0);
	assert_int_equal(dirty_log_sync_count(log), 40);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 0);
	assert_int_equal(dirty_log_in_sync(log, 39), 1);
	dirty_log_destroy(log);

	/* sync and the default both resync everything in a core log. */
	for (int i = 0; i < 2; i++) {
		log = make_resumed("core", 40, i ? DIRTY_LOG_FORCESYNC : DIRTY_LOG_SYNC_DEFAULT, NULL, false);
		assert_int_equal(dirty_log_sync_count(log), 0);
		for (n = 0; dirty_log_get_resync_work(log, &g) == 1; n++)
			assert_int_equal(g, n);
		assert_int_equal(n, 40);
		dirty_log_destroy(log);
	}

	/* A restart (known): the core log's bits are gone, all is dirty and
	 * resynced, nosync or not. */
	log = make_resumed("core", 40, DIRTY_LOG_NOSYNC, NULL, true);
	assert_int_equal(dirty_log_sync_count(log), 0);
	assert_int_equal(stats(log).dirty_count, 40);
	assert_int_equal(dirty_log_is_clean(log, 7), 0);
	dirty_log_destroy(log);
}

static void not_resumed(void **state)
{
	struct dirty_log *log = make("core", 10, DIRTY_LOG_SYNC_DEFAULT, NULL, false);
	uint64_t g = 1;
	bool rec;
	char buf[64];

	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(dirty_log_is_clean(log, 1), -EINVAL);
		assert_int_equal(dirty_log_in_sync(log, 1), -EINVAL);
		assert_int_equal(dirty_log_mark(log, &g, 1), -EINVAL);
		assert_int_equal(dirty_log_clear(log, &g, 1), -EINVAL);
		assert_int_equal(dirty_log_flush(log), -EINVAL);
		assert_int_equal(dirty_log_mark_flush(log, &g, 1), -EINVAL);
		assert_int_equal(dirty_log_get_resync_work(log, &g), -EINVAL);
		assert_int_equal(dirty_log_set_region_sync(log, 1, true), -EINVAL);
		assert_int_equal(dirty_log_is_remote_recovering(log, 1, &rec, &g), -EINVAL);
		assert_int_equal(dirty_log_presuspend(log), -EINVAL);
		assert_int_equal(dirty_log_postsuspend(log), -EINVAL);
		/* These work in any state. */
		assert_int_equal(dirty_log_sync_count(log), 0);
		assert_int_equal(dirty_log_status_info(log, buf, sizeof(buf)), 6);
		assert_true(dirty_log_status_table(log, buf, sizeof(buf)) > 0);
		assert_int_equal(stats(log).state, pass ? DIRTY_LOG_SUSPENDED : DIRTY_LOG_CONSTRUCTED);
		if (!pass) {
			assert_int_equal(dirty_log_resume(log), 0);
			assert_int_equal(dirty_log_presuspend(log), 0);
			assert_int_equal(dirty_log_postsuspend(log), 0);
		}
	}
	assert_int_equal(dirty_log_resume(log), 0);
	assert_int_equal(dirty_log_is_clean(log, 1), 1);
	dirty_log_destroy(log);
}

static void suspend_and_recovery(void **state)
{
	struct dirty_log *log = make_resumed("core", 10, DIRTY_LOG_SYNC_DEFAULT, NULL, false);
	uint64_t g, hint;
	bool rec;

	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 0);
	assert_int_equal(dirty_log_is_remote_recovering(log, 5, &rec, &hint), 0);
	assert_true(rec);
	assert_int_equal(hint, 0);

	/* Presuspended: no work, and nothing is recovering. */
	assert_int_equal(dirty_log_presuspend(log), 0);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 0);
	assert_int_equal(dirty_log_is_remote_recovering(log, 6, &rec, &hint), 0);
	assert_false(rec);
	assert_int_equal(hint, 10);
	/* Postsuspend forgets the recovery: region 0 and the priority of 5. */
	assert_int_equal(dirty_log_postsuspend(log), 0);
	assert_int_equal(stats(log).state, DIRTY_LOG_SUSPENDED);
	assert_int_equal(dirty_log_resume(log), 0);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 0);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 1);
	dirty_log_destroy(log);
}

static void remote_recovering_priority(void **state)
{
	struct dirty_log *log = make_resumed("core", 10, DIRTY_LOG_SYNC_DEFAULT, NULL, false);
	uint64_t g, hint;
	bool rec;

	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 0);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 1);
	/* Region 0 recovers: asked about, it is not pushed. */
	assert_int_equal(dirty_log_is_remote_recovering(log, 0, &rec, &hint), 0);
	assert_true(rec);
	assert_int_equal(hint, 1);	/* one before the search's place */
	assert_int_equal(dirty_log_is_remote_recovering(log, 7, &rec, &hint), 0);
	assert_true(rec);
	assert_int_equal(dirty_log_is_remote_recovering(log, 8, &rec, &hint), 0);
	assert_int_equal(dirty_log_is_remote_recovering(log, 8, &rec, &hint), 0);
	assert_int_equal(dirty_log_is_remote_recovering(log, 9, &rec, &hint), 0);
	/* 9 was resynced meanwhile: skipped when its turn comes. */
	assert_int_equal(dirty_log_set_region_sync(log, 9, true), 0);
	assert_int_equal(dirty_log_is_remote_recovering(log, 9, &rec, &hint), 0);
	assert_false(rec);
	/* The newest first, each once, then on from the search. */
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 8);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 7);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 2);
	/* 7 is recovering: asking again does not hand it out twice. */
	assert_int_equal(dirty_log_is_remote_recovering(log, 7, &rec, &hint), 0);
	assert_true(rec);
	for (uint64_t want = 3; want < 7; want++) {
		assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
		assert_int_equal(g, want);
	}
	/* 7 and 8 are recovering, 9 is in sync: done. */
	assert_int_equal(dirty_log_get_resync_work(log, &g), 0);
	assert_int_equal(dirty_log_is_remote_recovering(log, 3, &rec, &hint), 0);
	assert_int_equal(hint, 10);
	/* A failed recovery: not in sync; the search is over, but asking
	 * about it puts it first again. */
	assert_int_equal(dirty_log_set_region_sync(log, 7, false), 0);
	assert_int_equal(dirty_log_is_remote_recovering(log, 7, &rec, &hint), 0);
	assert_true(rec);
	assert_int_equal(dirty_log_get_resync_work(log, &g), 1);
	assert_int_equal(g, 7);
	dirty_log_destroy(log);
}

/* ---- disk log ---- */

static void disk_format(void **state)
{
	char path[256];
	uint8_t d[4096];
	struct dirty_log *log;
	uint64_t five = 5;

	temp_path(path, sizeof(path));
	/* A new file, the default: every region dirty on disk. */
	log = make("disk", 10, DIRTY_LOG_SYNC_DEFAULT, path, false);
	assert_int_equal(file_size(path), 4096);	/* extended at create */
	memset(d, 0xaa, sizeof(d));
	read_disk(path, d, sizeof(d));
	assert_int_equal(le32(d), 0);			/* nothing written before resume */
	assert_int_equal(dirty_log_resume(log), 0);
	read_disk(path, d, sizeof(d));
	check_header(d, 10);
	for (size_t i = 16; i < 1024; i++)
		assert_int_equal(d[i], 0);
	for (size_t i = 1024; i < 4096; i++)
		assert_int_equal(d[i], 0);
	assert_int_equal(stats(log).dirty_count, 10);
	assert_int_equal(dirty_log_sync_count(log), 0);
	dirty_log_destroy(log);

	/* nosync: a new log, all clean. */
	log = make_resumed("disk", 10, DIRTY_LOG_NOSYNC, path, false);
	read_disk(path, d, sizeof(d));
	check_header(d, 10);
	assert_int_equal(d[1024], 0xff);
	assert_int_equal(d[1025], 0x03);		/* bits past the count stay 0 */
	for (size_t i = 1026; i < 4096; i++)
		assert_int_equal(d[i], 0);
	assert_int_equal(dirty_log_sync_count(log), 10);

	/* mark_flush: on disk when it returns. */
	assert_int_equal(dirty_log_mark_flush(log, &five, 1), 0);
	read_disk(path, d, sizeof(d));
	assert_int_equal(d[1024], 0xff & ~(1u << 5));
	assert_false(disk_clean(d, 5));
	/* clear + flush: clean again on disk. */
	assert_int_equal(dirty_log_clear(log, &five, 1), 0);
	read_disk(path, d, sizeof(d));
	assert_false(disk_clean(d, 5));			/* clears are lazy */
	assert_int_equal(dirty_log_flush(log), 0);
	read_disk(path, d, sizeof(d));
	assert_true(disk_clean(d, 5));
	assert_int_equal(d[1024], 0xff);
	check_header(d, 10);
	dirty_log_destroy(log);
	unlink(path);
}

/* A log of many regions: the bits of later pages land where dm-log puts
 * them, and a mark there writes that page. */
static void disk_format_pages(void **state)
{
	const uint64_t n = 100000;	/* 12500 bytes of bits: 4 pages */
	uint64_t regs[3] = { 0, 40000, 99999 };
	char path[256];
	uint8_t *d = malloc(16384);
	struct dirty_log *log;

	assert_non_null(d);
	temp_path(path, sizeof(path));
	log = make_resumed("disk", n, DIRTY_LOG_NOSYNC, path, false);
	assert_int_equal(file_size(path), 16384);
	assert_int_equal(dirty_log_mark_flush(log, regs, 3), 0);
	read_disk(path, d, 16384);
	check_header(d, n);
	for (uint64_t g = 0; g < n; g++)
		assert_int_equal(disk_clean(d, g), g != 0 && g != 40000 && g != 99999);
	assert_int_equal(d[1024 + 12499], 0x7f);	/* 99999 is byte 12499's bit 7 */
	for (size_t i = 1024 + 12500; i < 16384; i++)
		assert_int_equal(d[i], 0);
	dirty_log_destroy(log);
	free(d);
	unlink(path);
}

static void disk_small_file_extended(void **state)
{
	char path[256];
	struct dirty_log *log;
	int fd;

	temp_path(path, sizeof(path));
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "xyz", 3), 3);	/* 3 bytes: short, and no magic */
	close(fd);
	/* 30000 regions: 1024 + 3752 bytes, a buffer of two pages. */
	log = make("disk", 30000, DIRTY_LOG_SYNC_DEFAULT, path, false);
	assert_int_equal(file_size(path), 8192);
	assert_int_equal(dirty_log_resume(log), 0);
	assert_int_equal(stats(log).dirty_count, 30000);
	dirty_log_destroy(log);
	unlink(path);
}

static void disk_reopen(void **state)
{
	uint64_t marks[2] = { 3, 17 };
	char path[256];
	uint8_t d[4096];
	struct dirty_log *log;

	temp_path(path, sizeof(path));
	log = make_resumed("disk", 20, DIRTY_LOG_SYNC_DEFAULT, path, false);
	resync_all(log);
	assert_int_equal(dirty_log_flush(log), 0);
	assert_int_equal(stats(log).dirty_count, 0);
	assert_int_equal(dirty_log_mark_flush(log, marks, 2), 0);
	dirty_log_destroy(log);

	/* The default reads the disk: 3 and 17 dirty and out of sync. */
	log = make_resumed("disk", 20, DIRTY_LOG_SYNC_DEFAULT, path, false);
	for (uint64_t g = 0; g < 20; g++) {
		bool dirty = g == 3 || g == 17;

		assert_int_equal(dirty_log_is_clean(log, g), !dirty);
		assert_int_equal(dirty_log_in_sync(log, g), !dirty);
	}
	assert_int_equal(dirty_log_sync_count(log), 18);
	dirty_log_destroy(log);

	/* A restart with nosync still reads the disk. */
	log = make_resumed("disk", 20, DIRTY_LOG_NOSYNC, path, true);
	assert_int_equal(dirty_log_is_clean(log, 3), 0);
	assert_int_equal(dirty_log_in_sync(log, 17), 0);
	assert_int_equal(dirty_log_is_clean(log, 4), 1);
	assert_int_equal(dirty_log_sync_count(log), 18);
	dirty_log_destroy(log);

	/* A restart with sync too. */
	log = make_resumed("disk", 20, DIRTY_LOG_FORCESYNC, path, true);
	assert_int_equal(dirty_log_sync_count(log), 18);
	dirty_log_destroy(log);

	/* sync, not a restart: a new log, all dirty, on disk too. */
	log = make_resumed("disk", 20, DIRTY_LOG_FORCESYNC, path, false);
	assert_int_equal(dirty_log_sync_count(log), 0);
	assert_int_equal(stats(log).dirty_count, 20);
	read_disk(path, d, sizeof(d));
	check_header(d, 20);
	assert_int_equal(d[1024] | d[1025] | d[1026], 0);
	dirty_log_destroy(log);

	/* nosync, not a restart: a new log, all clean. */
	log = make_resumed("disk", 20, DIRTY_LOG_NOSYNC, path, false);
	assert_int_equal(dirty_log_sync_count(log), 20);
	assert_int_equal(stats(log).dirty_count, 0);
	dirty_log_destroy(log);
	unlink(path);
}

static void disk_grown_and_shrunk(void **state)
{
	char path[256];
	uint8_t d[4096];
	struct dirty_log *log;

	temp_path(path, sizeof(path));
	log = make_resumed("disk", 10, DIRTY_LOG_SYNC_DEFAULT, path, false);
	resync_all(log);
	assert_int_equal(dirty_log_postsuspend(log), 0);	/* postsuspend flushes */
	dirty_log_destroy(log);
	read_disk(path, d, sizeof(d));
	check_header(d, 10);
	assert_int_equal(d[1024], 0xff);
	assert_int_equal(d[1025], 0x03);

	/* Grown to 20: the new regions are dirty. */
	log = make_resumed("disk", 20, DIRTY_LOG_SYNC_DEFAULT, path, false);
	for (uint64_t g = 0; g < 20; g++)
		assert_int_equal(dirty_log_is_clean(log, g), g < 10);
	assert_int_equal(dirty_log_sync_count(log), 10);
	read_disk(path, d, sizeof(d));
	check_header(d, 20);
	assert_int_equal(d[1024], 0xff);
	assert_int_equal(d[1025], 0x03);
	assert_int_equal(d[1026], 0);
	resync_all(log);
	dirty_log_destroy(log);	/* destroy flushes the clears */
	read_disk(path, d, sizeof(d));
	assert_int_equal(d[1026], 0x0f);

	/* Grown with a restart and nosync: still dirty, the new regions are
	 * not known to agree. */
	log = make_resumed("disk", 30, DIRTY_LOG_NOSYNC, path, true);
	for (uint64_t g = 0; g < 30; g++)
		assert_int_equal(dirty_log_is_clean(log, g), g < 20);
	dirty_log_destroy(log);

	/* Shrunk to 5: the bits past it are gone from the disk. */
	log = make_resumed("disk", 5, DIRTY_LOG_SYNC_DEFAULT, path, false);
	assert_int_equal(dirty_log_sync_count(log), 5);
	read_disk(path, d, sizeof(d));
	check_header(d, 5);
	assert_int_equal(d[1024], 0x1f);
	assert_int_equal(d[1025] | d[1026] | d[1027], 0);
	dirty_log_destroy(log);
	unlink(path);
}

static void disk_versions(void **state)
{
	char path[256];
	uint8_t d[4096], before[4096];
	struct dirty_log *log;
	int fd;

	temp_path(path, sizeof(path));
	log = make_resumed("disk", 10, DIRTY_LOG_NOSYNC, path, false);
	dirty_log_destroy(log);

	/* Version 3: refused, the log untouched on disk and not resumed. */
	read_disk(path, d, sizeof(d));
	d[4] = 3;
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, d, sizeof(d), 0), (ssize_t)sizeof(d));
	memcpy(before, d, sizeof(d));
	log = make("disk", 10, DIRTY_LOG_SYNC_DEFAULT, path, false);
	assert_int_equal(dirty_log_resume(log), -EINVAL);
	assert_int_equal(stats(log).state, DIRTY_LOG_CONSTRUCTED);
	assert_false(stats(log).failed);
	assert_int_equal(dirty_log_is_clean(log, 0), -EINVAL);
	dirty_log_destroy(log);
	read_disk(path, d, sizeof(d));
	assert_memory_equal(d, before, sizeof(d));

	/* Version 1 reads as 2 (dm-log on little endian), written back as 2. */
	d[4] = 1;
	d[1024] = 0xfe;		/* region 0 dirty */
	assert_int_equal(pwrite(fd, d, sizeof(d), 0), (ssize_t)sizeof(d));
	log = make_resumed("disk", 10, DIRTY_LOG_SYNC_DEFAULT, path, false);
	assert_int_equal(dirty_log_is_clean(log, 0), 0);
	assert_int_equal(dirty_log_is_clean(log, 1), 1);
	read_disk(path, d, sizeof(d));
	check_header(d, 10);
	assert_int_equal(d[1024], 0xfe);
	dirty_log_destroy(log);

	/* A bad magic: a new log, whatever the version. */
	d[0] ^= 0xff;
	d[4] = 9;
	assert_int_equal(pwrite(fd, d, sizeof(d), 0), (ssize_t)sizeof(d));
	log = make_resumed("disk", 10, DIRTY_LOG_SYNC_DEFAULT, path, false);
	assert_int_equal(stats(log).dirty_count, 10);
	read_disk(path, d, sizeof(d));
	check_header(d, 10);
	dirty_log_destroy(log);
	close(fd);
	unlink(path);
}

static void disk_stats_fast_path(void **state)
{
	char path[256];
	struct dirty_log *log;
	struct dirty_log_stats a, b;
	uint64_t five = 5, six = 6;

	temp_path(path, sizeof(path));
	log = make_resumed("disk", 100, DIRTY_LOG_NOSYNC, path, false);
	a = stats(log);
	assert_int_equal(a.writes, 1);		/* resume's */
	assert_int_equal(a.flushes, 1);

	/* Nothing changed: a flush does nothing. */
	assert_int_equal(dirty_log_flush(log), 0);
	b = stats(log);
	assert_int_equal(b.writes, a.writes);
	assert_int_equal(b.flushes, a.flushes);

	assert_int_equal(dirty_log_mark_flush(log, &five, 1), 0);
	a = stats(log);
	assert_int_equal(a.writes, b.writes + 1);
	assert_int_equal(a.flushes, b.flushes + 1);
	/* Durable already: no I/O. */
	assert_int_equal(dirty_log_mark_flush(log, &five, 1), 0);
	b = stats(log);
	assert_int_equal(b.writes, a.writes);
	assert_int_equal(b.flushes, a.flushes);

	/* A clear alone: written, not flushed. */
	assert_int_equal(dirty_log_clear(log, &five, 1), 0);
	assert_int_equal(dirty_log_flush(log), 0);
	a = stats(log);
	assert_int_equal(a.writes, b.writes + 1);
	assert_int_equal(a.flushes, b.flushes);
	/* It is clean on disk now: marking it again needs I/O. */
	assert_int_equal(dirty_log_mark_flush(log, &five, 1), 0);
	b = stats(log);
	assert_int_equal(b.writes, a.writes + 1);
	assert_int_equal(b.flushes, a.flushes + 1);

	/* A plain mark then a flush: written and flushed. */
	assert_int_equal(dirty_log_mark(log, &six, 1), 0);
	assert_int_equal(dirty_log_flush(log), 0);
	a = stats(log);
	assert_int_equal(a.writes, b.writes + 1);
	assert_int_equal(a.flushes, b.flushes + 1);
	/* ... and is durable: mark_flush costs nothing. */
	assert_int_equal(dirty_log_mark_flush(log, &six, 1), 0);
	b = stats(log);
	assert_int_equal(b.writes, a.writes);
	assert_int_equal(b.flushes, a.flushes);

	/* Cleared in memory, not written: the disk still says dirty, so a
	 * mark_flush needs no I/O, and the region is dirty again. */
	assert_int_equal(dirty_log_clear(log, &six, 1), 0);
	assert_int_equal(dirty_log_is_clean(log, 6), 1);
	assert_int_equal(dirty_log_mark_flush(log, &six, 1), 0);
	assert_int_equal(dirty_log_is_clean(log, 6), 0);
	a = stats(log);
	assert_int_equal(a.flushes, b.flushes);
	assert_int_equal(a.dirty_count, 2);
	dirty_log_destroy(log);
	unlink(path);
}

/* ---- group commit ---- */

#define THREADS 8

struct gc_arg {
	struct dirty_log *log;
	pthread_barrier_t *barrier;
	uint64_t region;
	int result;
};

static void *gc_thread(void *p)
{
	struct gc_arg *a = p;

	pthread_barrier_wait(a->barrier);
	a->result = dirty_log_mark_flush(a->log, &a->region, 1);
	return NULL;
}

static void group_commit(void **state)
{
	const uint64_t n = 200000;	/* 25000 bytes: 7 pages */
	struct gc_arg args[THREADS];
	pthread_t th[THREADS];
	pthread_barrier_t barrier;
	struct dirty_log_stats a, b;
	char path[256];
	uint8_t *d = malloc(28672);
	struct dirty_log *log;

	assert_non_null(d);
	temp_path(path, sizeof(path));
	log = make_resumed("disk", n, DIRTY_LOG_NOSYNC, path, false);
	a = stats(log);
	pthread_barrier_init(&barrier, NULL, THREADS);
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct gc_arg){ .log = log, .barrier = &barrier,
					   .region = (uint64_t)i * 24999 + 1, .result = -1 };
		assert_int_equal(pthread_create(&th[i], NULL, gc_thread, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&barrier);
	b = stats(log);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(args[i].result, 0);
	assert_true(b.flushes - a.flushes >= 1);
	assert_true(b.flushes - a.flushes <= THREADS);
	assert_int_equal(b.dirty_count, THREADS);

	read_disk(path, d, 28672);
	check_header(d, n);
	for (int i = 0; i < THREADS; i++)
		assert_false(disk_clean(d, args[i].region));
	for (uint64_t g = 0; g < n; g++)
		if ((g - 1) % 24999 != 0 || g == 0)
			assert_true(disk_clean(d, g));

	/* Again: each is durable, no I/O at all. */
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(dirty_log_mark_flush(log, &args[i].region, 1), 0);
	a = stats(log);
	assert_int_equal(a.flushes, b.flushes);
	assert_int_equal(a.writes, b.writes);
	dirty_log_destroy(log);
	free(d);
	unlink(path);
}

/* Many rounds of threads marking, clearing and flushing at once: every
 * mark_flush returns with its region dirty on disk. */
struct churn_arg {
	struct dirty_log *log;
	const char *path;
	int id;
	int bad;
};

static void *churn_thread(void *p)
{
	struct churn_arg *a = p;
	uint8_t d[4096];	/* 16000 regions: one page */
	int fd = open(a->path, O_RDONLY);

	if (fd < 0) {
		a->bad++;
		return NULL;
	}
	for (int round = 0; round < 200; round++) {
		uint64_t g = (uint64_t)(a->id * 4000 + round * 7 % 4000);

		if (dirty_log_mark_flush(a->log, &g, 1) != 0 ||
		    pread(fd, d, sizeof(d), 0) != (ssize_t)sizeof(d) || disk_clean(d, g))
			a->bad++;
		if (dirty_log_clear(a->log, &g, 1) != 0)
			a->bad++;
		if (round % 3 == 0 && dirty_log_flush(a->log) != 0)
			a->bad++;
	}
	close(fd);
	return NULL;
}

static void group_commit_churn(void **state)
{
	struct churn_arg args[4];
	pthread_t th[4];
	char path[256];
	struct dirty_log *log;

	temp_path(path, sizeof(path));
	log = make_resumed("disk", 16000, DIRTY_LOG_NOSYNC, path, false);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct churn_arg){ .log = log, .path = path, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, churn_thread, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].bad, 0);
	}
	assert_int_equal(dirty_log_flush(log), 0);
	assert_int_equal(stats(log).dirty_count, 0);
	dirty_log_destroy(log);
	unlink(path);
}

/* ---- I/O errors ---- */

static void disk_write_error(void **state)
{
	struct rlimit old, low;
	char path[256], buf[512], want[512];
	struct dirty_log *log;
	uint64_t three = 3, four = 4;
	void (*old_handler)(int);

	temp_path(path, sizeof(path));
	log = make_resumed("disk", 10, DIRTY_LOG_NOSYNC, path, false);
	assert_int_equal(dirty_log_status_info(log, buf, sizeof(buf)), (int)strlen(path) + 9);
	snprintf(want, sizeof(want), "3 disk %s A", path);
	assert_string_equal(buf, want);

	/* Writes past 1024 bytes fail (EFBIG), the page of bits among them. */
	old_handler = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	low = old;
	low.rlim_cur = 1024;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &low), 0);
	assert_int_equal(dirty_log_mark_flush(log, &three, 1), -EIO);
	assert_int_equal(dirty_log_mark(log, &four, 1), 0);
	assert_int_equal(dirty_log_flush(log), -EIO);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_handler);

	assert_true(stats(log).failed);
	assert_int_equal(dirty_log_status_info(log, buf, sizeof(buf)), (int)strlen(path) + 9);
	snprintf(want, sizeof(want), "3 disk %s D", path);
	assert_string_equal(buf, want);
	/* Still a log in memory; the failed pages are written again, and
	 * the disk stays D. */
	assert_int_equal(dirty_log_is_clean(log, 3), 0);
	assert_int_equal(dirty_log_mark_flush(log, &three, 1), 0);
	assert_true(stats(log).failed);
	dirty_log_destroy(log);

	/* The write done again reached the disk: 3 and 4 are dirty there. */
	log = make_resumed("disk", 10, DIRTY_LOG_SYNC_DEFAULT, path, false);
	assert_int_equal(stats(log).dirty_count, 2);
	assert_int_equal(dirty_log_is_clean(log, 4), 0);
	dirty_log_destroy(log);
	unlink(path);
}

/* A failed resume write: -EIO, the log failed, yet resumed with its bits. */
static void disk_resume_write_error(void **state)
{
	struct rlimit old, low;
	char path[256];
	struct dirty_log *log;
	void (*old_handler)(int);

	temp_path(path, sizeof(path));
	log = make("disk", 10, DIRTY_LOG_SYNC_DEFAULT, path, false);
	old_handler = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	low = old;
	low.rlim_cur = 512;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &low), 0);
	assert_int_equal(dirty_log_resume(log), -EIO);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_handler);
	assert_true(stats(log).failed);
	assert_int_equal(stats(log).state, DIRTY_LOG_RESUMED);
	assert_int_equal(dirty_log_is_clean(log, 0), 0);
	assert_int_equal(dirty_log_in_sync(log, 0), 0);
	/* The next flush writes the whole log again. */
	assert_int_equal(dirty_log_flush(log), 0);
	assert_int_equal(read_disk_header_nr(path), 10);

	/* All clean on disk now; yet a log that failed does not trust its
	 * disk at the next resume: every region dirty again (cmirrord). */
	resync_all(log);
	assert_int_equal(dirty_log_postsuspend(log), 0);
	assert_int_equal(stats(log).dirty_count, 0);
	assert_int_equal(dirty_log_resume(log), 0);
	assert_int_equal(stats(log).dirty_count, 10);
	assert_int_equal(dirty_log_sync_count(log), 0);
	dirty_log_destroy(log);
	unlink(path);
}

/* ---- status ---- */

/* The calls the tracker's write-intent log uses: the dirty regions one by
 * one, all cleared at a checkpoint (lazily), and a look at a file's header. */
static void in_process_calls(void **state)
{
	uint64_t regs[] = { 3, 64, 129 }, g = 0, nr = 0;
	char path[256], reason[96];
	uint8_t d[4096];
	struct dirty_log *log;
	int fd;

	temp_path(path, sizeof(path));
	assert_int_equal(dirty_log_probe(path, &nr, reason, sizeof(reason)), -EINVAL); /* empty */
	log = make_resumed("disk", 130, DIRTY_LOG_NOSYNC, path, false);
	assert_int_equal(dirty_log_probe(path, &nr, reason, sizeof(reason)), 0);
	assert_int_equal(nr, 130);
	assert_false(dirty_log_next_dirty(log, &g));
	assert_int_equal(dirty_log_mark_flush(log, regs, 3), 0);
	for (size_t i = 0; i < 3; i++, g++) {
		assert_true(dirty_log_next_dirty(log, &g));
		assert_int_equal(g, regs[i]);
	}
	assert_false(dirty_log_next_dirty(log, &g));
	g = 1000;
	assert_false(dirty_log_next_dirty(log, &g));
	/* A region out of sync too: clear_all makes it clean and in sync. */
	assert_int_equal(dirty_log_set_region_sync(log, 64, false), 0);
	assert_int_equal(dirty_log_clear_all(log), 0);
	g = 0;
	assert_false(dirty_log_next_dirty(log, &g));
	assert_int_equal(dirty_log_sync_count(log), 130);
	assert_int_equal(stats(log).dirty_count, 0);
	read_disk(path, d, sizeof(d));
	assert_false(disk_clean(d, 3));			/* lazy */
	assert_int_equal(dirty_log_flush(log), 0);
	read_disk(path, d, sizeof(d));
	for (uint64_t r = 0; r < 130; r++)
		assert_true(disk_clean(d, r));
	/* Marked again after the clear: durable again, and found. */
	assert_int_equal(dirty_log_mark_flush(log, &regs[1], 1), 0);
	read_disk(path, d, sizeof(d));
	assert_false(disk_clean(d, 64));
	dirty_log_destroy(log);
	/* A damaged header; a missing file. */
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "XXXX", 4, 0), 4);
	close(fd);
	assert_int_equal(dirty_log_probe(path, &nr, reason, sizeof(reason)), -EINVAL);
	assert_non_null(strstr(reason, "not a dirty log"));
	unlink(path);
	assert_int_equal(dirty_log_probe(path, &nr, reason, sizeof(reason)), -ENOENT);
}

static void check_status(struct dirty_log *log, const char *info, const char *table)
{
	char buf[512];

	assert_int_equal(dirty_log_status_info(log, buf, sizeof(buf)), (int)strlen(info));
	assert_string_equal(buf, info);
	assert_int_equal(dirty_log_status_table(log, buf, sizeof(buf)), (int)strlen(table));
	assert_string_equal(buf, table);
}

static struct dirty_log *make_status(const char *type, enum dirty_log_sync sync, bool boe, const char *path)
{
	struct dirty_log_config cfg = {
		.name = "status", .type = type, .dev_sectors = 1 << 20, .region_sectors = 1024,
		.sync = sync, .block_on_error = boe, .disk_path = path,
	};
	struct dirty_log *log = NULL;

	assert_int_equal(dirty_log_create(&log, &cfg), 0);
	return log;
}

static void status_lines(void **state)
{
	static const char *const words[] = { "", "nosync ", "sync " };
	char path[256], info[512], table[512], buf[8];
	struct dirty_log *log;

	temp_path(path, sizeof(path));
	for (int s = 0; s < 3; s++) {
		enum dirty_log_sync sync = (enum dirty_log_sync)s;

		log = make_status("core", sync, false, NULL);
		snprintf(table, sizeof(table), "core %d 1024 %s", s ? 2 : 1, words[s]);
		check_status(log, "1 core", table);
		dirty_log_destroy(log);

		log = make_status("disk", sync, true, path);
		snprintf(info, sizeof(info), "3 disk %s A", path);
		snprintf(table, sizeof(table), "disk %d %s 1024 %s", s ? 3 : 2, path, words[s]);
		check_status(log, info, table);
		dirty_log_destroy(log);

		for (int boe = 0; boe < 2; boe++) {
			log = make_status("clustered-core", sync, boe, NULL);
			snprintf(table, sizeof(table), "clustered-core 1024 %s%s ", words[s],
				 boe ? "block_on_error" : "");
			check_status(log, "1 clustered-core", table);
			dirty_log_destroy(log);

			log = make_status("clustered-disk", sync, boe, path);
			snprintf(info, sizeof(info), "3 clustered-disk %s A", path);
			snprintf(table, sizeof(table), "clustered-disk %s 1024 %s%s ", path, words[s],
				 boe ? "block_on_error" : "");
			check_status(log, info, table);
			dirty_log_destroy(log);
		}
	}

	/* The exact strings of a few, spelled out. */
	log = make_status("core", DIRTY_LOG_SYNC_DEFAULT, false, NULL);
	check_status(log, "1 core", "core 1 1024 ");
	/* Too small a buffer: -ENOSPC, and the NUL counts. */
	assert_int_equal(dirty_log_status_info(log, buf, 6), -ENOSPC);
	assert_int_equal(dirty_log_status_info(log, buf, 7), 6);
	assert_int_equal(dirty_log_status_table(log, buf, sizeof(buf)), -ENOSPC);
	dirty_log_destroy(log);
	log = make_status("core", DIRTY_LOG_NOSYNC, false, NULL);
	check_status(log, "1 core", "core 2 1024 nosync ");
	dirty_log_destroy(log);
	log = make_status("clustered-core", DIRTY_LOG_SYNC_DEFAULT, false, NULL);
	check_status(log, "1 clustered-core", "clustered-core 1024  ");
	dirty_log_destroy(log);
	log = make_status("clustered-core", DIRTY_LOG_NOSYNC, true, NULL);
	check_status(log, "1 clustered-core", "clustered-core 1024 nosync block_on_error ");
	dirty_log_destroy(log);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(config_validation),
		cmocka_unit_test(core_life),
		cmocka_unit_test(core_sync_modes),
		cmocka_unit_test(not_resumed),
		cmocka_unit_test(suspend_and_recovery),
		cmocka_unit_test(remote_recovering_priority),
		cmocka_unit_test(disk_format),
		cmocka_unit_test(disk_format_pages),
		cmocka_unit_test(disk_small_file_extended),
		cmocka_unit_test(disk_reopen),
		cmocka_unit_test(disk_grown_and_shrunk),
		cmocka_unit_test(disk_versions),
		cmocka_unit_test(disk_stats_fast_path),
		cmocka_unit_test(group_commit),
		cmocka_unit_test(group_commit_churn),
		cmocka_unit_test(disk_write_error),
		cmocka_unit_test(disk_resume_write_error),
		cmocka_unit_test(status_lines),
		cmocka_unit_test(in_process_calls),
	};

	/* The refusals this provokes are warnings; errors still show. */
	log_set_level(LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
