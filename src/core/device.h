/* A device: a named backing store plus the stack of filters in front of it.
 * Every export (NBD, FUSE) reads and writes through these calls, which check the
 * range (overflow-safe) and the read-only flag before anything reaches a filter. */
#ifndef BDF_CORE_DEVICE_H
#define BDF_CORE_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

struct device;
struct extents;

/* Opens PATH as device NAME. Errors are logged here. */
int device_open(const char *name, const char *path, bool readonly, struct device **out);
/* Detaches every filter, flushes (unless read-only) and closes. */
void device_close(struct device *dev);

const char *device_name(const struct device *dev);
const char *device_path(const struct device *dev);
uint64_t device_size(const struct device *dev);
bool device_readonly(const struct device *dev);
uint32_t device_logical_block_size(const struct device *dev);

/* 0 if [offset, offset+count) lies inside the device, else -EINVAL
 * (-ENOSPC for a write past the end; -EPERM for a write to a read-only device). */
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

/* Attach filter NAME on top of the stack, live: in-flight requests drain first.
 * -ENOENT: no such filter; -EALREADY: already attached to this device. */
int device_attach(struct device *dev, const char *filter_name, const char *args);
/* Detach filter NAME, live. -ENOENT if it is not attached. */
int device_detach(struct device *dev, const char *filter_name);
/* Is filter NAME attached? */
bool device_has_filter(struct device *dev, const char *filter_name);

#endif
