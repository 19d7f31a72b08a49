/* The mirror filter: a live move of a device to new storage (the device-filter
 * RFC's live migration). Writes go to the device's store and to the target,
 * and are acknowledged once both have them; a region is marked durably in the
 * mirror's dirty log before its first write; a background resync copies every
 * region not in sync, at a rate the user sets. When all are in sync, a switch
 * makes the target the device's store, drained, with its clients connected.
 * A failed target fails the mirror, never the device.
 *
 * With a state directory the mirror survives a restart: DIR/NAME.mirror
 * (target, region size, rate) and DIR/NAME.mirror-log (its dirty log, in
 * dm-log's disk format); the resync goes on from the log, not from zero. */
#ifndef BDF_FILTERS_MIRROR_H
#define BDF_FILTERS_MIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct device;
struct registry;

#define MIRROR_REGION_DEFAULT (1u << 20)

enum mirror_state {
	MIRROR_SYNCING,
	MIRROR_SYNCED,
	MIRROR_SWITCHED,	/* the target is the device's store; mirror_stop forgets it */
	MIRROR_FAILED,
};

struct mirror_status {
	enum mirror_state state;
	char target[4096];
	uint64_t region_size;
	uint64_t regions;
	uint64_t in_sync;	/* regions in sync, as the log has them on disk */
	uint64_t copied;	/* bytes the resync copied since the start */
	uint64_t rate;		/* bytes per second, 0: no limit */
	int error;		/* with MIRROR_FAILED: the target's errno */
};

struct mirror_args {
	const char *target;	/* an absolute path: a file or block device */
	uint64_t region_size;	/* bytes, a power of two of 64 KiB at least; 0: the default */
	uint64_t rate;		/* bytes per second; 0: no limit */
	const char *state_dir;	/* NULL: no restart */
	struct registry *reg;	/* to claim the target against devices and storage */
	bool restore;		/* after a restart: the log says what is in sync */
};

/* Start mirroring DEV to A->target. ERR gets a one-line reason for -EINVAL,
 * -EBUSY (a mirror already, or the target is in use), -ENOSPC (the target is
 * smaller than the device) and the target's open errors. */
int mirror_start(struct device *dev, const struct mirror_args *a, char *err, size_t errlen);
/* -ENOENT: no mirror. */
int mirror_get_status(struct device *dev, struct mirror_status *st);
/* The target becomes DEV's store; the mirror stays, passing everything
 * through, to say "switched" until mirror_stop. -EBUSY until it is synced,
 * -EIO once it failed. */
int mirror_switch(struct device *dev, struct registry *reg, char *err, size_t errlen);
/* Abandon the move (the target is left as it is), or forget a switched one. */
int mirror_stop(struct device *dev, struct registry *reg);
/* At a clean stop, before the devices go: end the resync; the state files
 * stay for the next start. */
void mirror_shutdown(struct device *dev);
/* At start: the mirrors DIR/NAME.mirror says were running, started again on
 * the devices of REG (logged; a device that is gone is skipped). */
void mirror_restore_all(struct registry *reg, const char *state_dir);

extern const struct filter_ops mirror_filter_ops;

#endif
