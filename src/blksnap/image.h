/* A snapshot image as a device: reads and writes go through the diff area of
 * its origin (never to the origin itself). */
#ifndef BDF_BLKSNAP_IMAGE_H
#define BDF_BLKSNAP_IMAGE_H

struct device;
struct diff_area;

/* A new device NAME over DA (it takes a reference on DA). */
int image_device_new(const char *name, struct diff_area *da, struct device **out);

#endif
