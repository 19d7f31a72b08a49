/* A snapshot image as a device: reads and writes go through the diff area of
 * its origin (never to the origin itself). */
#ifndef BDF_BLKSNAP_IMAGE_H
#define BDF_BLKSNAP_IMAGE_H

struct device;
struct diff_area;

#include <stdbool.h>

/* An image is named after its origin: "<origin>-image". No device may have a
 * name that ends so, so that an image's name is always free. */
#define IMAGE_SUFFIX "-image"
bool image_name_reserved(const char *name);

/* A new device NAME over DA (it takes a reference on DA). Its I/O fails
 * until the take arms DA on its origin's tracker. */
int image_device_new(const char *name, struct diff_area *da, struct device **out);
/* After the take: the description exports show, with the generation and
 * number of the image's CBT (what a backup client names its changes by). */
void image_publish(struct device *img, struct diff_area *da);

#endif
