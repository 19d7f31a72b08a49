/* The restore point as a device, and the foreground life of serve and mount
 * (see export.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>

#include "backup/export.h"
#include "backup/image.h"
#include "backup/util.h"
#include "core/backing.h"
#include "core/device.h"
#include "core/extents.h"

static int dev_pread(void *priv, void *buf, uint64_t count, uint64_t offset)
{
	return image_read(priv, buf, count, offset);
}

static int add_extent(void *opaque, uint64_t offset, uint64_t len, bool zero)
{
	struct extents *e = opaque;
	int r = extents_add(e, offset, len, zero ? EXTENT_HOLE | EXTENT_ZERO : 0);

	if (r < 0)
		return r;
	return extents_done(e) ? 1 : 0; /* 1: enough, stop */
}

static int dev_extents(void *priv, uint64_t count, uint64_t offset, uint32_t flags, struct extents *e)
{
	int r = image_extents(priv, offset, count, add_extent, e);

	return r > 0 ? 0 : r;
}

static void dev_close(void *priv)
{
	image_close(priv);
}

/* No pwrite, zero or flush: the store is read-only, and says so. */
static const struct backing_ops export_ops = {
	.pread = dev_pread,
	.close = dev_close,
	.extents = dev_extents,
};

int export_device_new(struct image *im, const char *name, struct device **out)
{
	struct backing *b;
	char desc[64];
	int r;

	snprintf(desc, sizeof(desc), "backup %u", image_backup(im));
	r = backing_new_custom(&export_ops, im, image_size(im), desc, &b);
	if (r < 0) {
		image_close(im);
		bk_error("out of memory");
		return r;
	}
	r = device_new(name, b, true, out);
	if (r < 0) {
		backing_close(b); /* closes IM */
		bk_error("out of memory");
	}
	return r;
}

int export_signals(void)
{
	sigset_t mask;
	int fd;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (fd < 0)
		bk_error("signalfd: %s", strerror(errno));
	return fd;
}
