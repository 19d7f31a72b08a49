/* A device: a named backing store plus the stack of filters in front of it.
 * Every export (NBD, FUSE) reads and writes through these calls, which check the
 * range (overflow-safe) and the read-only flag before anything reaches a filter. */
#ifndef BDF_CORE_DEVICE_H
#define BDF_CORE_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/meta_context.h"

struct device;
struct extents;

/* Opens PATH as device NAME, holding one reference. Errors are logged here. */
int device_open(const char *name, const char *path, bool readonly, struct device **out);
struct backing;
/* A device over a backing store made elsewhere (a snapshot image); it owns B. */
int device_new(const char *name, struct backing *b, bool readonly, struct device **out);
/* References: exports and tables hold one each. When the last one goes, every
 * filter is detached, the store flushed (unless read-only) and closed. */
struct device *device_get(struct device *dev);
void device_put(struct device *dev);

const char *device_name(const struct device *dev);
const char *device_path(const struct device *dev);
uint64_t device_size(const struct device *dev);
bool device_readonly(const struct device *dev);
/* Has a write, trim, write-zeroes or resize gone down the filter stack since
 * the device was opened? (A saved CBT map describes the store only if not.) */
bool device_written(const struct device *dev);
struct filter_ops;
/* FN runs once, before the first write, trim, write-zeroes or resize goes
 * down DEV's stack, unless a filter of type UNLESS (NULL: none) is attached
 * at that moment; writers that come meanwhile wait for it. FN must not do
 * I/O on DEV. Set before DEV is served. */
void device_on_first_write(struct device *dev, const struct filter_ops *unless,
			   void (*fn)(struct device *dev, void *opaque), void *opaque);
uint32_t device_logical_block_size(const struct device *dev);

/* 0 if [offset, offset+count) lies inside the device as it is now, else -EINVAL
 * (-ENOSPC for a write past the end; -EPERM for a write to a read-only device).
 * The data path checks again under the drain lock, so a caller's early check
 * cannot race with a resize. */
int device_check_range(const struct device *dev, uint64_t count, uint64_t offset, bool write);

/* The data path: 0 or a negative errno. A zero count is a successful no-op. */
int device_pread(struct device *dev, void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int device_pwrite(struct device *dev, const void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int device_flush(struct device *dev, uint32_t flags);
int device_trim(struct device *dev, uint64_t count, uint64_t offset, uint32_t flags);
int device_zero(struct device *dev, uint64_t count, uint64_t offset, uint32_t flags);
int device_cache(struct device *dev, uint64_t count, uint64_t offset, uint32_t flags);
/* Fills E (made for [offset, offset+count)) with the allocation map. */
int device_extents(struct device *dev, uint64_t count, uint64_t offset, uint32_t flags, struct extents *e);

/* The metadata contexts the device's stack publishes (filters top down, then
 * the store), FN called for each; and the extents of context NAME over
 * [offset, offset+count), answered by the layer that publishes it (range
 * checked, under the drain lock; -ENOENT if no layer knows NAME now). */
int device_list_contexts(struct device *dev, meta_context_fn fn, void *opaque);
int device_context_extents(struct device *dev, const char *name, uint64_t count, uint64_t offset,
			   uint32_t flags, struct extents *e);

/* What the stack supports now (see the filter_ops can_* ops); a read-only
 * device cannot write, trim or zero. */
bool device_can_write(struct device *dev);
bool device_can_trim(struct device *dev);
bool device_can_zero(struct device *dev);
bool device_can_fua(struct device *dev);
bool device_can_cache(struct device *dev);
bool device_can_multi_conn(struct device *dev);

/* What exports show as the device's description: set by whoever made the
 * device (a snapshot image names its origin and CBT), else the store's path.
 * The string is copied; a description handed out stays valid for the
 * device's life. */
const char *device_description(struct device *dev);
int device_set_description(struct device *dev, const char *desc);

/* Do A and B share bytes of storage (the same file or block device, by any
 * name; a partition of the other's disk; a loop device on the other's file)? */
bool device_same_store(const struct device *a, const struct device *b);
struct store_id;
/* Does [offset, offset+len) of the store with ids IDS (core/store_id.h) share
 * a byte with this device's store? */
bool device_store_overlaps(const struct device *dev, const struct store_id *ids, size_t n, uint64_t offset,
			   uint64_t len);

/* A device made by a module for its own ends (a snapshot image) is not
 * removable by users: registry_remove() refuses it; its maker removes it with
 * registry_remove_device(). Set before the device is added. */
void device_set_removable(struct device *dev, bool removable);
bool device_removable(const struct device *dev);

/* The device leaves service: with its requests drained, every filter is
 * detached (a held one refuses first, -EBUSY, and nothing changes), and from
 * then on every request fails with -ENODEV, though references to the device
 * may live on (an NBD client still connected); the store is flushed and
 * closed when the last one goes. -ENODEV if it was killed already. */
int device_kill(struct device *dev);
bool device_killed(struct device *dev);

/* Resize to SIZE bytes, a whole number of sectors, at least one: a regular file
 * is grown or shrunk to it. With SIZE = DEVICE_SIZE_PROBE, take the backing
 * store's size as it is now (after truncate(1), or a block device that grew),
 * changing nothing on it. The device is drained, each filter's resize op may
 * refuse (the tracker: -EBUSY while a snapshot is taken), the size changes,
 * and I/O resumes. Exports see the new size on their next request; an NBD
 * client keeps the size it negotiated, and requests past the end fail.
 * -EINVAL: a bad SIZE, or a store now smaller than one sector; -EPERM: SIZE on
 * a read-only device; -EOPNOTSUPP: SIZE on a block device, or a store whose
 * size is fixed (a snapshot image). *OLD_SIZE (may be NULL) gets the size
 * before. Failures of the store are logged here. */
#define DEVICE_SIZE_PROBE UINT64_MAX
int device_resize(struct device *dev, uint64_t size, uint64_t *old_size);

struct filter_ops;
/* Attach a filter on top of the stack, live: in-flight requests drain first.
 * CTX goes to the filter's attach op. -EALREADY: one of that type is attached;
 * -ENODEV: the device was killed. */
int device_attach(struct device *dev, const struct filter_ops *ops, void *ctx);
/* Detach the filter of type OPS, live. -ENOENT if none is attached; -EBUSY if
 * it is held (device_filter_hold) or its detach op refuses. */
int device_detach(struct device *dev, const struct filter_ops *ops);
/* A name fit for a device: 1 to 255 printable bytes, none of ' ' ',' '=' '/'
 * (names travel in NBD export names, URIs, logs and the --device syntax). */
bool device_name_valid(const char *name);

/* The names of the attached filters, top first (static strings); the count. */
size_t device_filter_names(struct device *dev, const char **names, size_t max);

/* Drain: wait for the requests in flight and hold new ones back, until
 * device_resume(). A snapshot take drains all its devices for one instant. */
void device_quiesce(struct device *dev);
void device_resume(struct device *dev);
/* The filter of type OPS of a quiesced device (only between quiesce and
 * resume), or NULL. */
struct filter *device_filter_quiesced(struct device *dev, const struct filter_ops *ops);
/* Only with DEV quiesced: serve NB from now on (at least DEV's size: the size
 * does not change); the old store is given back, for the caller to close once
 * DEV is resumed. The mirror's switch to its target. */
struct backing *device_swap_backing_quiesced(struct device *dev, struct backing *nb);

/* Is a filter of type OPS attached? */
bool device_has_filter(struct device *dev, const struct filter_ops *ops);

struct filter;
/* Run FN on the filter of type OPS while it cannot be detached (FN must not
 * do I/O on DEV's stack from another thread and wait for it). -ENOENT if
 * none is attached. */
int device_with_filter(struct device *dev, const struct filter_ops *ops,
		       int (*fn)(struct filter *f, void *opaque), void *opaque);

/* Hold the filter of type OPS attached: until as many releases, detach and
 * device_kill refuse with -EBUSY (a snapshot holds its devices' trackers
 * from snapshot_add to destroy). -ENOENT if none is attached, -ENODEV if the
 * device was killed. */
int device_filter_hold(struct device *dev, const struct filter_ops *ops);
void device_filter_release(struct device *dev, const struct filter_ops *ops);

#endif
