/* The FUSE export (see fuse_export.h): the table of files and the registry's
 * side of it, the low-level libfuse session, the mount, our worker threads,
 * and shutdown. The file operations are in fuse_ops.c.
 *
 * Why the low-level API: files are named by inode numbers we hand out, so a
 * device removed and re-added under the same name is a new inode and a handle
 * on the old one can never reach the new device. Inode numbers are never
 * reused within a mount.
 *
 * Why our own threads instead of fuse_session_loop_mt(): shutdown must be able
 * to stop the workers while a loop device keeps the mount busy (the session
 * would otherwise only end at unmount). The workers wait on the session fd
 * (non-blocking) and on an eventfd that says "stop". */
#include "fuse/fuse_export.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/lock_order.h"
#include "common/log.h"
#include "core/device.h"
#include "fuse/fuse_internal.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void fx_file_free(struct fx_file *f)
{
	if (!f)
		return;
	free(f->name);
	free(f);
}

struct fx_file *fx_find_ino_locked(struct fuse_export *fx, fuse_ino_t ino)
{
	for (size_t i = 0; i < fx->n_files; i++)
		if (fx->files[i]->ino == ino)
			return fx->files[i];
	return NULL;
}

struct fx_file *fx_find_name_locked(struct fuse_export *fx, const char *name)
{
	for (size_t i = 0; i < fx->n_files; i++)
		if (!atomic_load(&fx->files[i]->removed) && strcmp(fx->files[i]->name, name) == 0)
			return fx->files[i];
	return NULL;
}

struct device *fx_settle_locked(struct fuse_export *fx, struct fx_file *f, struct fx_file **gone)
{
	struct device *dev = NULL;

	*gone = NULL;
	if (!atomic_load(&f->removed) || f->nopen > 0)
		return NULL;
	dev = f->dev;
	if (dev)
		f->size = device_size(dev);
	f->dev = NULL;
	if (f->nlookup == 0) {
		for (size_t i = 0; i < fx->n_files; i++)
			if (fx->files[i] == f) {
				fx->files[i] = fx->files[--fx->n_files];
				break;
			}
		*gone = f;
	}
	return dev;
}

/* ---- the registry's side ---- */

int fuse_export_add(struct fuse_export *fx, struct device *dev)
{
	struct fx_file *f = calloc(1, sizeof(*f)), **v;
	int r = 0;

	if (!f || !(f->name = strdup(device_name(dev)))) {
		fx_file_free(f);
		return -ENOMEM;
	}
	f->size = device_size(dev);
	f->readonly = device_readonly(dev);
	f->added = time(NULL);
	atomic_init(&f->removed, false);

	lock_mutex(&fx->lock, LOCK_EXPORTS);
	if (fx_find_name_locked(fx, f->name)) {
		r = -EEXIST;
	} else if (!(v = realloc(fx->files, (fx->n_files + 1) * sizeof(*v)))) {
		r = -ENOMEM;
	} else {
		fx->files = v;
		f->ino = fx->next_ino++;
		f->dev = device_get(dev);
		fx->files[fx->n_files++] = f;
	}
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	if (r < 0) {
		fx_file_free(f);
		return r;
	}
	log_debug("fuse: %s/%s added", fx->dir, device_name(dev));
	return 0;
}

void fuse_export_remove(struct fuse_export *fx, const char *name)
{
	struct fx_file *f, *gone = NULL;
	struct device *dev = NULL;
	bool open = false;

	/* No kernel notification: lookups are never cached (entry_timeout 0),
	 * and a notification from here could wait on a request that waits on
	 * the caller's locks. */
	lock_mutex(&fx->lock, LOCK_EXPORTS);
	f = fx_find_name_locked(fx, name);
	if (f) {
		atomic_store(&f->removed, true);
		open = f->nopen > 0;
		dev = fx_settle_locked(fx, f, &gone);
	}
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	if (open)
		log_info("fuse: %s/%s removed while open: its I/O fails with EIO from now on", fx->dir, name);
	device_put(dev);
	fx_file_free(gone);
}

const char *fuse_export_dir(const struct fuse_export *fx)
{
	return fx->dir;
}

/* ---- session, workers, mount and unmount ---- */

__attribute__((format(printf, 2, 0)))
static void fx_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	if (n > 0 && msg[n - 1] == '\n')
		msg[n - 1] = '\0';
	if (level <= FUSE_LOG_ERR)
		log_error("fuse: %s", msg);
	else if (level <= FUSE_LOG_WARNING)
		log_warn("fuse: %s", msg);
	else
		log_debug("fuse: %s", msg);
}

/* One worker's wait for work: the session fd with EPOLLEXCLUSIVE, so that a
 * request wakes one idle worker and not all of them (a thundering herd that
 * halves small-request throughput on a small machine), and the stop eventfd,
 * which wakes them all. */
static int worker_epoll(struct fuse_export *fx)
{
	struct epoll_event fuse_ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = 0 };
	struct epoll_event stop_ev = { .events = EPOLLIN, .data.u32 = 1 };
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fuse_session_fd(fx->se), &fuse_ev) < 0 ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, fx->stop_fd, &stop_ev) < 0) {
		log_error("fuse: epoll: %s", strerror(errno));
		if (ep >= 0)
			close(ep);
		return -1;
	}
	return ep;
}

static void *worker(void *arg)
{
	struct fuse_export *fx = arg;
	struct fuse_buf buf = { .mem = NULL };
	int ep = worker_epoll(fx);

	while (ep >= 0 && !atomic_load(&fx->stopping) && !fuse_session_exited(fx->se)) {
		struct epoll_event ev[2];
		/* Read first, wait only when there is nothing: under load a
		 * worker goes from one request to the next without waiting.
		 * After an unmount the read fails with ENODEV and the session
		 * exits (r == 0). */
		int r = fuse_session_receive_buf(fx->se, &buf);

		if (r > 0) {
			fuse_session_process_buf(fx->se, &buf);
			continue;
		}
		if (r == -EINTR)
			continue;
		if (r != -EAGAIN)
			break;
		r = epoll_wait(ep, ev, 2, -1);
		if (r < 0 && errno != EINTR) {
			log_error("fuse: epoll_wait: %s", strerror(errno));
			break;
		}
	}
	/* Unmounted from outside (umount DIR): say so once; NBD goes on. */
	if (fuse_session_exited(fx->se) && !atomic_exchange(&fx->ended, true)) {
		if (fx->unmounted)
			fx->unmounted(fx->opaque);
		else
			log_warn("fuse: %s was unmounted: its files are gone", fx->dir);
	}
	if (ep >= 0)
		close(ep);
	free(buf.mem);
	return NULL;
}

/* A bdfilterd killed with SIGKILL leaves its mount behind ("Transport endpoint
 * is not connected"); mounting over it would fail. */
static void clear_dead_mount(const char *dir)
{
	struct stat st;

	if (stat(dir, &st) < 0 && errno == ENOTCONN) {
		if (umount2(dir, MNT_DETACH) == 0)
			log_warn("fuse: %s: detached the dead mount a previous bdfilterd left", dir);
	}
}

/* The mount itself, as root does it (libfuse's own mount would strdup a path
 * it only frees in a lazy unmount of its own, which we do not want: a busy
 * mount must be seen as busy). The session gets the fd as /dev/fd/N. */
static int mount_fuse(const char *dir, int *fdp)
{
	char opts[128];
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		log_error("fuse: cannot open /dev/fuse: %s", strerror(errno));
		return -errno;
	}
	/* default_permissions: the kernel checks the modes; no allow_other:
	 * only the daemon's user (root) may use the files, as with a block
	 * device, which is not world-readable either. */
	snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=%u,group_id=%u,default_permissions", fd,
		 (unsigned)getuid(), (unsigned)getgid());
	if (mount("bdfilter", dir, "fuse.bdfilter", MS_NOSUID | MS_NODEV, opts) < 0) {
		int r = -errno;

		log_error("fuse: cannot mount %s: %s%s", dir, strerror(errno),
			  errno == EPERM ? " (it needs root)" : "");
		close(fd);
		return r;
	}
	*fdp = fd;
	return 0;
}

int fuse_export_new(const struct fuse_export_config *cfg, struct fuse_export **out)
{
	char *argv[] = { "bdfilterd", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, argv);
	struct fuse_export *fx;
	char real[PATH_MAX], fdpath[32];
	int fd = -1, r;

	fx = calloc(1, sizeof(*fx));
	if (!fx)
		return -ENOMEM;
	pthread_mutex_init(&fx->lock, NULL);
	atomic_init(&fx->ended, false);
	atomic_init(&fx->stopping, false);
	fx->stop_fd = -1;
	fx->next_ino = ROOT_INO + 1;
	fx->threads = cfg->threads ? cfg->threads : 1;
	fx->grace_ms = cfg->grace_ms;
	fx->unmounted = cfg->unmounted;
	fx->opaque = cfg->opaque;
	fuse_set_log_func(fx_log);

	clear_dead_mount(cfg->dir);
	if (mkdir(cfg->dir, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		log_error("fuse: cannot make %s: %s", cfg->dir, strerror(errno));
		goto fail;
	}
	/* Before mounting: once mounted, a lookup of DIR waits for our workers. */
	if (!realpath(cfg->dir, real) || !(fx->dir = strdup(real))) {
		r = -errno;
		log_error("fuse: %s: %s", cfg->dir, strerror(errno));
		goto fail;
	}
	fx->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (fx->stop_fd < 0) {
		r = -errno;
		log_error("fuse: eventfd: %s", strerror(errno));
		goto fail;
	}
	fx->se = fuse_session_new(&args, &fx_ops, sizeof(fx_ops), fx);
	fuse_opt_free_args(&args);
	if (!fx->se) {
		r = -EINVAL; /* libfuse said why */
		goto fail;
	}
	r = mount_fuse(fx->dir, &fd);
	if (r < 0)
		goto fail;
	fx->mounted = true;
	fx->mounted_at = time(NULL);
	snprintf(fdpath, sizeof(fdpath), "/dev/fd/%d", fd);
	if (fuse_session_mount(fx->se, fdpath) != 0) {
		close(fd);
		r = -EIO; /* libfuse said why */
		goto fail;
	}
	/* Workers read without blocking and wait in epoll when there is nothing. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		r = -errno;
		log_error("fuse: %s: %s", fx->dir, strerror(errno));
		goto fail;
	}
	*out = fx;
	return 0;
fail:
	fuse_export_free(fx);
	return r;
}

int fuse_export_start(struct fuse_export *fx)
{
	fx->workers = calloc(fx->threads, sizeof(*fx->workers));
	if (!fx->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < fx->threads; i++) {
		int r = pthread_create(&fx->workers[i], NULL, worker, fx);

		if (r != 0) {
			log_error("fuse: cannot start a worker: %s", strerror(r));
			return -r;
		}
		fx->n_workers++;
	}
	log_info("fuse: serving devices as files in %s", fx->dir);
	return 0;
}

/* Unmount, waiting while the mount is busy: a loop device holds a file open
 * until losetup -d. After the grace period, detach it lazily; the caller then
 * cuts the connection. */
static void unmount(struct fuse_export *fx)
{
	uint64_t deadline = now_ms() + fx->grace_ms;
	bool warned = false;

	/* Our own unmount ends the session too; that needs no word. */
	atomic_store(&fx->ended, true);
	for (;;) {
		if (umount2(fx->dir, UMOUNT_NOFOLLOW) == 0 || errno == EINVAL /* unmounted from outside */) {
			fx->mounted = false;
			return;
		}
		if (errno != EBUSY || now_ms() >= deadline)
			break;
		if (!warned) {
			log_warn("fuse: %s is busy (a loop device or a process holds a file): "
				 "waiting up to %u ms for it to be let go",
				 fx->dir, fx->grace_ms);
			warned = true;
		}
		usleep(50 * 1000);
	}
	if (errno != EBUSY)
		log_error("fuse: unmount %s: %s", fx->dir, strerror(errno));
	if (umount2(fx->dir, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
		log_warn("fuse: %s detached while busy: loop devices on its files get I/O errors from now on",
			 fx->dir);
	fx->mounted = false;
}

void fuse_export_shutdown(struct fuse_export *fx)
{
	uint64_t one = 1;

	if (!fx || fx->shut)
		return;
	fx->shut = true;
	/* Workers keep serving while we wait: a loop device being detached
	 * during the grace period still gets its last requests answered. */
	if (fx->mounted)
		unmount(fx);
	atomic_store(&fx->stopping, true);
	if (fx->stop_fd >= 0 && write(fx->stop_fd, &one, sizeof(one)) != sizeof(one))
		log_error("fuse: cannot stop the workers: %s", strerror(errno));
	for (size_t i = 0; i < fx->n_workers; i++)
		pthread_join(fx->workers[i], NULL);
	fx->n_workers = 0;
	/* Closing the last /dev/fuse descriptor aborts the connection: requests
	 * still queued (from a lazily detached mount) fail instead of hanging. */
	if (fx->se) {
		fuse_session_destroy(fx->se);
		fx->se = NULL;
	}
}

void fuse_export_free(struct fuse_export *fx)
{
	if (!fx)
		return;
	fuse_export_shutdown(fx);
	for (size_t i = 0; i < fx->n_files; i++) {
		device_put(fx->files[i]->dev);
		fx_file_free(fx->files[i]);
	}
	free(fx->files);
	free(fx->workers);
	if (fx->stop_fd >= 0)
		close(fx->stop_fd);
	pthread_mutex_destroy(&fx->lock);
	free(fx->dir);
	free(fx);
}
