/* The tracker: blksnap's filter. It owns a device's CBT map (and, with
 * snapshots, the copy-before-write). These calls serve the control commands
 * cbtinfo, readcbtmap and markdirtyblock; -ENOENT if no tracker is attached. */
#ifndef BDF_BLKSNAP_TRACKER_H
#define BDF_BLKSNAP_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uuid/uuid.h>

struct device;

struct cbt_info {
	uint64_t device_capacity; /* bytes */
	uint32_t block_size;
	uint64_t block_count;
	uuid_t generation_id;
	uint8_t changes_number;
	bool corrupted;
};

struct sector_range {
	uint64_t offset; /* sectors */
	uint64_t count;
};

int tracker_cbtinfo(struct device *dev, struct cbt_info *out);
/* Read up to LEN bytes of the read map from byte OFFSET; *GOT is how many. */
int tracker_read_cbtmap(struct device *dev, uint64_t offset, uint64_t len, uint8_t *buf, uint64_t *got);
/* Mark sector ranges changed in both maps; -EINVAL if one is beyond the device. */
int tracker_mark_dirty(struct device *dev, const struct sector_range *r, size_t n);

/* device_remove: the device leaves the daemon, though a client may hold it
 * open a while longer. Its tracker's state file (with --state-dir) goes now,
 * and is not saved at a stop even if the device only closes then. 0 also
 * without a tracker. */
int tracker_drop_state(struct device *dev);

/* For the snapshot code, on the tracker filter F of a device. */
struct cbt_map;
struct diff_area;
struct filter;
struct cbt_map *tracker_cbt(struct filter *f);
struct diff_area *tracker_diff_area(struct filter *f);
/* Only with the device drained (device_quiesce). */
void tracker_set_diff_area(struct filter *f, struct diff_area *da);

#endif
