/* What `serve` and `mount` share: the restore point (image.h) as a read-only
 * core device, so that the project's NBD server and FUSE export serve it as
 * they serve bdfilterd's devices; and their life in the foreground (the
 * signals that end it, the one line that says it is ready). */
#ifndef BDF_BACKUP_EXPORT_H
#define BDF_BACKUP_EXPORT_H

#include <signal.h>
#include <stdint.h>

struct device;
struct image;

/* A read-only device NAME over IM, which it takes (closed, its repository
 * lock released, when the device's last reference goes; on failure too).
 * Reads go to image_read; base:allocation is image_extents, its zero blocks
 * holes that read as zeros. Errors printed. */
int export_device_new(struct image *im, const char *name, struct device **out);

/* Block SIGINT and SIGTERM (before any thread starts, so that every thread
 * inherits the mask) and return a signalfd for them, or -1 (printed). SIGPIPE
 * is ignored: a client gone is an error on its socket. */
int export_signals(void);

#endif
