/* The dirty-region log: device-mapper's dirty log as one object, with the
 * semantics of the kernel's core and disk logs (drivers/md/dm-log.c) and
 * cmirrord's answers on a single node.
 *
 * A log splits a device into regions of REGION_SECTORS 512-byte sectors and
 * keeps three bits per region: clean (nothing is being written there: after a
 * crash the region needs no resync), in sync (the legs agree), recovering
 * (handed out by get_resync_work and not yet settled). A disk log keeps the
 * clean bits on a file or block device in dm-log's format: a header
 * (magic "MiRr" 0x4D695272, version 2, nr_regions, little endian) at byte 0
 * and the clean bits, little-endian bit order, from byte 1024.
 *
 * Marks are never lazy: dirty_log_mark_flush() returns once the marks are on
 * stable storage, and concurrent callers share one write and one flush (group
 * commit); a region whose dirty bit is already durable costs no I/O. Clears
 * are lazy: they reach the disk with the next write, unflushed.
 *
 * Every function is safe to call from several threads. Regions are numbered
 * from 0; a region at or past the count is -EINVAL. Errors are negative errno
 * values, each logged once here with the log's name. */
#ifndef BDF_DIRTYLOG_DIRTY_LOG_H
#define BDF_DIRTYLOG_DIRTY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dirty_log;

enum dirty_log_sync {
	DIRTY_LOG_SYNC_DEFAULT,	/* resync what the log says is not clean */
	DIRTY_LOG_NOSYNC,	/* the legs are known to agree: all in sync */
	DIRTY_LOG_FORCESYNC,	/* resync everything */
};

enum dirty_log_state {
	DIRTY_LOG_CONSTRUCTED,	/* made, not resumed yet (cmirrord's "pending") */
	DIRTY_LOG_RESUMED,
	DIRTY_LOG_SUSPENDED,	/* after postsuspend; resume brings it back */
};

struct dirty_log_config {
	const char *name;		/* for messages and status: a uuid, a device name */
	const char *type;		/* "core", "disk", "clustered-core", "clustered-disk" */
	uint64_t dev_sectors;		/* the device's size in 512-byte sectors, > 0 */
	uint32_t region_sectors;	/* a power of two, >= 2 (dm-log's rule) */
	enum dirty_log_sync sync;
	bool block_on_error;		/* kept and shown in the table line only */
	const char *disk_path;		/* NULL: a core log; else the log file or device */
	/* The log was live when the daemon stopped without a DTR (a restart):
	 * a disk log reads its bits from disk whatever SYNC says, a core log,
	 * whose bits are gone, resyncs everything. */
	bool known;
};

/* Make a log in state CONSTRUCTED. A disk log opens DISK_PATH (O_RDWR,
 * O_CLOEXEC) and checks that it is large enough: a regular file is extended,
 * a block device that is too small is -ENOSPC. Nothing is read or written
 * before dirty_log_resume().
 * Also -EINVAL: a TYPE that is not one of the four, a disk path given to a
 * core type or missing for a disk type, a DISK_PATH that is neither a regular
 * file nor a block device, more than UINT32_MAX regions (dm-log and cmirrord
 * count regions in 32 bits). A core log starts as dm-log's create_log_context
 * makes it: every region clean, in sync only with NOSYNC; with KNOWN every
 * region dirty and out of sync. */
int dirty_log_create(struct dirty_log **out, const struct dirty_log_config *cfg);
/* Flush what is pending (errors logged, not returned) and free. */
void dirty_log_destroy(struct dirty_log *log);

/* dm-log's resume: a disk log reads the header and bits (a bad magic, a
 * short read: a new log, every region dirty unless NOSYNC), regions beyond
 * the header's nr_regions (the device grew) are set clean with NOSYNC and
 * dirty otherwise, the sync bits become a copy of the clean bits, the search
 * for resync work starts over, and a disk log writes and flushes the result.
 * A log already resumed: 0, nothing changes (cmirrord). -EIO when the disk
 * cannot be read or written (the log is then failed). */
/* In detail: with KNOWN the disk is read whatever SYNC says, and regions
 * beyond nr_regions are dirty even with NOSYNC. A version other than 1 (read
 * as 2) or 2 is -EINVAL: nothing is written and the log stays in its state.
 * After -EIO the log is RESUMED all the same, with the bits of a new log when
 * the read failed, and stays failed (INFO shows D) until destroyed; a failed
 * log is not read at its next resume (cmirrord): a new log. A core log's
 * resume keeps its bits and only restarts the search (dm-log's core_resume). */
int dirty_log_resume(struct dirty_log *log);
/* Stop handing out resync work (is_remote_recovering says "no"). */
int dirty_log_presuspend(struct dirty_log *log);
/* Write what is pending; the log goes to SUSPENDED; recovery is forgotten. */
int dirty_log_postsuspend(struct dirty_log *log);
/* Both are -EINVAL unless the log is RESUMED (cmirrord); until the next
 * resume get_resync_work hands out nothing after a presuspend. */

uint32_t dirty_log_region_sectors(const struct dirty_log *log);
uint64_t dirty_log_region_count(const struct dirty_log *log);

/* 1 or 0; -EINVAL for a region out of range or a log not resumed. */
int dirty_log_is_clean(struct dirty_log *log, uint64_t region);
int dirty_log_in_sync(struct dirty_log *log, uint64_t region);

/* Mark regions dirty in memory (dm's mark_region); durable at the next flush. */
int dirty_log_mark(struct dirty_log *log, const uint64_t *regions, size_t n);
/* Mark regions clean, each only if it is in sync (cmirrord); lazy. */
int dirty_log_clear(struct dirty_log *log, const uint64_t *regions, size_t n);
/* Write the bits if they changed; flush the device if a region was marked
 * dirty since the last flush (clears alone are written, not flushed). */
int dirty_log_flush(struct dirty_log *log);
/* Version 3's integrated flush and the write-intent path: mark REGIONS and
 * return when they are durable (a core log: at once). */
int dirty_log_mark_flush(struct dirty_log *log, const uint64_t *regions, size_t n);

/* 1 and *REGION: a region to resync (now recovering); 0: no work. */
int dirty_log_get_resync_work(struct dirty_log *log, uint64_t *region);
/* The region's recovery ended: in sync or not. */
int dirty_log_set_region_sync(struct dirty_log *log, uint64_t region, bool in_sync);
uint64_t dirty_log_sync_count(struct dirty_log *log);
/* cmirrord's answer: recovering = the region is not in sync (no while
 * presuspended); HINT = the lowest region that may still need resync. A
 * region asked about and not in sync moves to the front of the resync work. */
int dirty_log_is_remote_recovering(struct dirty_log *log, uint64_t region, bool *recovering,
				   uint64_t *hint);

/* dm's status lines: INFO ("1 core", "3 disk PATH A|D"; cmirrord's words for
 * the clustered types) and TABLE ("core 1 1024 ", "disk 3 PATH 1024 nosync ").
 * The length written (without the NUL), or -ENOSPC. */
int dirty_log_status_info(struct dirty_log *log, char *buf, size_t len);
int dirty_log_status_table(struct dirty_log *log, char *buf, size_t len);

/* ---- for users in the daemon (the tracker's write-intent log) ---- */

/* The first region at or after *REGION that is not clean: true and *REGION,
 * or false when there is none. */
bool dirty_log_next_dirty(struct dirty_log *log, uint64_t *region);
/* Every region clean and in sync at once: what a checkpoint that covers all
 * the marks so far allows. Lazy as any clear: on disk at the next write. */
int dirty_log_clear_all(struct dirty_log *log);
/* What the disk log at PATH says, without opening it as a log: 0 and its
 * region count, -ENOENT (no file), -EINVAL (short, a bad magic or version;
 * logged at info with REASON filled in) or another -errno. */
int dirty_log_probe(const char *path, uint64_t *nr_regions, char *reason, size_t reason_len);

struct dirty_log_stats {
	enum dirty_log_state state;
	uint64_t region_count;
	uint32_t region_sectors;
	uint64_t sync_count;	/* regions in sync */
	uint64_t dirty_count;	/* regions not clean */
	uint64_t writes;	/* writes of the bits to disk */
	uint64_t flushes;	/* fdatasync calls */
	bool failed;		/* the disk log failed an I/O */
};
void dirty_log_get_stats(struct dirty_log *log, struct dirty_log_stats *st);

#endif
