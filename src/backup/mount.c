/* mount: a restore point as one read-only regular file in a FUSE directory,
 * for losetup -r and mount -o ro, in the foreground until SIGINT, SIGTERM or
 * an unmount from outside (fusermount3 -u DIR, umount DIR). The file is the
 * image (image.h) as a core device, served by the project's FUSE export, as
 * bdfilterd serves its devices. The repository's read lock is held
 * throughout. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/export.h"
#include "backup/image.h"
#include "backup/util.h"
#include "common/log.h"
#include "core/device.h"
#include "fuse/fuse_export.h"

#define MOUNT_THREADS 4
/* At the end, how long a mount kept busy (a loop device still attached) is
 * waited for before it is detached lazily, as bdfilterd does. */
#define MOUNT_GRACE_MS 10000

/* From a FUSE worker: the directory was unmounted from outside. */
static void unmounted(void *opaque)
{
	uint64_t one = 1;

	if (write(*(int *)opaque, &one, sizeof(one)) != sizeof(one))
		bk_error("cannot say the directory was unmounted: %s", strerror(errno));
}

static void mount_loop(int sigfd, int gonefd, const char *dir)
{
	struct pollfd pfd[2] = { { .fd = sigfd, .events = POLLIN }, { .fd = gonefd, .events = POLLIN } };

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			bk_error("poll: %s", strerror(errno));
			return;
		}
		if (pfd[0].revents) {
			struct signalfd_siginfo si;

			if (read(sigfd, &si, sizeof(si)) == sizeof(si))
				log_info("signal %u: unmounting %s", si.ssi_signo, dir);
			return;
		}
		if (pfd[1].revents) {
			log_info("%s was unmounted", dir);
			return;
		}
	}
}

int mount_run(const struct mount_opts *o)
{
	struct image_open_opts io = { .repo = o->repo, .at = o->at, .key_file = o->key_file,
				      .device = o->device };
	struct fuse_export_config fcfg = {
		.dir = o->dir, .threads = MOUNT_THREADS, .grace_ms = MOUNT_GRACE_MS, .unmounted = unmounted,
	};
	const char *name = o->name ? o->name : "disk.img";
	struct fuse_export *fx = NULL;
	struct device *dev = NULL;
	struct image *im = NULL;
	int sigfd, gonefd, r;

	log_set_ident("bdfilter-backup");
	log_set_level(LOG_LEVEL_WARN); /* the ready line, then only what goes wrong */
	if ((sigfd = export_signals()) < 0)
		return -EIO;
	gonefd = eventfd(0, EFD_CLOEXEC);
	if (gonefd < 0) {
		r = -errno;
		bk_error("eventfd: %s", strerror(-r));
		close(sigfd);
		return r;
	}
	fcfg.opaque = &gonefd;
	if ((r = image_open(&io, &im)) < 0)
		goto out;
	if ((r = export_device_new(im, name, &dev)) < 0)
		goto out;
	/* Errors from here on are the FUSE export's, said in its log lines. */
	if ((r = fuse_export_new(&fcfg, &fx)) < 0)
		goto out;
	if ((r = fuse_export_add(fx, dev)) < 0) {
		bk_error("%s/%s: %s", fuse_export_dir(fx), name, strerror(-r));
		goto out;
	}
	if ((r = fuse_export_start(fx)) < 0)
		goto out;
	printf("mounted backup %u of %s on %s/%s\n", image_backup(im), o->repo, fuse_export_dir(fx), name);
	fflush(stdout);
	mount_loop(sigfd, gonefd, fuse_export_dir(fx));
	r = 0;
out:
	fuse_export_free(fx); /* unmounts, waiting out a busy mount's grace */
	device_put(dev);
	close(gonefd);
	close(sigfd);
	return r;
}
