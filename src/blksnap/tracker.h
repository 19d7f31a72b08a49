/* The tracker: blksnap's filter. It owns a device's CBT map (and, with
 * snapshots, the copy-before-write). These calls serve the control commands
 * cbtinfo, readcbtmap and markdirtyblock; -ENOENT if no tracker is attached. */
#ifndef BDF_BLKSNAP_TRACKER_H
#define BDF_BLKSNAP_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uuid/uuid.h>

struct blksnap;
struct device;

struct cbt_info {
	uint64_t device_capacity; /* bytes */
	uint32_t block_size;
	uint64_t block_count;
	uuid_t generation_id;
	uint8_t changes_number;
	bool corrupted;
	/* The write-intent log (--state-dir), when there is one. */
	bool wil;
	uint64_t wil_region_size; /* bytes */
	uint64_t wil_regions, wil_dirty, wil_writes, wil_flushes;
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

/* The tracker filter type, for device_attach and the filter table. */
extern const struct filter_ops tracker_filter_ops;

/* With bs->state_dir: should DEV be changed while no tracker is attached,
 * its saved map (NAME.cbt, NAME.wil) is removed before the change is made,
 * for that map would load later as if nothing had been written. Call when DEV
 * joins the daemon, before it is served. */
void tracker_guard_saved_state(struct blksnap *bs, struct device *dev);

/* For the snapshot code, on the tracker filter F of a device. */
struct cbt_map;
struct diff_area;
struct filter;
/* Run FN on DEV's tracker while it cannot be detached; -ENOENT without one. */
int tracker_with(struct device *dev, int (*fn)(struct filter *f, void *opaque), void *opaque);
/* DEV's tracker, with DEV quiesced (device_quiesce), or NULL. */
struct filter *tracker_of_quiesced(struct device *dev);
/* Keep DEV's tracker attached (detach and device_remove refuse with EBUSY)
 * until tracker_release(): a snapshot holds its devices' trackers. -ENOENT
 * without a tracker, -ENODEV if the device was removed. */
int tracker_hold(struct device *dev);
void tracker_release(struct device *dev);
struct cbt_map *tracker_cbt(struct filter *f);
struct diff_area *tracker_diff_area(struct filter *f);
/* Only with the device drained (device_quiesce). */
void tracker_set_diff_area(struct filter *f, struct diff_area *da);
/* A change the write map gets by another way than a write through the
 * tracker (an image write, marked in the origin's map): its regions go to
 * the write-intent log first. */
void tracker_log_change(struct filter *f, uint64_t offset, uint64_t count);
/* With a state directory: save the map as a checkpoint and clear the
 * write-intent log. Only with the device drained: at a snapshot take, after
 * the numbers moved on. 0, or -errno (logged; the log is then given up). */
int tracker_checkpoint(struct filter *f);

#endif
