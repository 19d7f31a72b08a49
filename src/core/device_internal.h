/* What the filter stack needs of a device (core-internal). */
#ifndef BDF_CORE_DEVICE_INTERNAL_H
#define BDF_CORE_DEVICE_INTERNAL_H

struct backing;
struct device;

struct backing *device_backing(struct device *dev);

#endif
