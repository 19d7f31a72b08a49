/* bdfilterd: start-up (options, devices, listeners, the FUSE mount,
 * daemonizing), the accept loop, and the ordered tear-down on SIGTERM/SIGINT:
 * stop listening, let the NBD server answer what is in flight, unmount the FUSE
 * directory, then flush and close the devices. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control_server.h"
#include "control/handlers.h"
#include "core/device.h"
#include "core/registry.h"
#include "core/store_id.h"
#include "daemon/options.h"
#include "daemon/storage_veto.h"
#include "dirtylog/ulog_server.h"
#include "dirtylog/ulog_transport.h"
#include "fuse/fuse_export.h"
#include "nbd/nbd_listen.h"
#include "nbd/nbd_server.h"
#include "blksnap/blksnap.h"
#include "blksnap/cbt_store.h"
#include "blksnap/image.h"
#include "blksnap/tracker.h"
#include "filters/filters.h"
#include "filters/mirror.h"

/* How long shutdown waits for a busy FUSE mount (loop devices still attached). */
#define FUSE_GRACE_MS 10000

struct daemon {
	struct options opt;
	struct blksnap bs;
	struct registry *reg;
	struct listener *listeners;
	size_t n_listeners;
	struct nbd_server *nbd;
	struct nbd_tls *tls; /* NULL: no credentials, TLS off everywhere */
	struct fuse_export *fuse;
	bool bs_ready;
	int control_fd;
	struct control_server *control;
	struct control_ctx control_ctx;
	struct storage_veto veto;
	int sigfd;
	int state_lock_fd; /* holds the flock on --state-dir */
	struct ulog_server *ulog; /* the dm userspace-log server, if asked for */
	struct ulog_transport *ulog_cn, *ulog_sp;
	char **nbd_uris; /* for the control socket's status */
	size_t n_nbd_uris;
	bool wrote_pidfile;
};

/* Every device in the registry is an NBD export of the same name. */
static int nbd_device_added(void *opaque, struct device *dev)
{
	struct nbd_server *srv = opaque;

	return nbd_server_add_export(srv, dev, device_name(dev), NULL, device_readonly(dev));
}

static void nbd_device_removed(void *opaque, struct device *dev)
{
	nbd_server_remove_export(opaque, device_name(dev));
}

/* A device written with no tracker makes its saved CBT map stale. */
static int state_device_added(void *opaque, struct device *dev)
{
	tracker_guard_saved_state(opaque, dev);
	return 0;
}

/* ... and a file of the same name in the FUSE directory. */
static int fuse_device_added(void *opaque, struct device *dev)
{
	return fuse_export_add(opaque, dev);
}

static void fuse_device_removed(void *opaque, struct device *dev)
{
	fuse_export_remove(opaque, device_name(dev));
}

static void warn_param(const char *msg)
{
	log_warn("%s", msg);
}

static int open_devices(struct daemon *d)
{
	for (size_t i = 0; i < d->opt.n_devices; i++) {
		const struct device_spec *s = &d->opt.devices[i];
		struct device *dev;
		int r;

		if (image_name_reserved(s->name)) {
			log_error("--device %s: names ending in " IMAGE_SUFFIX " are kept for snapshot images",
				  s->name);
			return -1;
		}
		if (device_open(s->name, s->path, s->readonly, &dev) < 0)
			return -1; /* backing_open said why */
		for (size_t j = 0; j < s->n_filters; j++)
			if (device_attach(dev, filter_lookup(s->filters[j]), &d->bs) < 0) {
				device_put(dev);
				return -1;
			}
		r = registry_add(d->reg, dev);
		device_put(dev);
		if (r == -EBUSY) {
			struct store_id ids[STORE_IDS_MAX];
			struct device *other = NULL;
			size_t n;

			if (store_ids_of_path(s->path, ids, &n) == 0)
				other = registry_find_store(d->reg, ids, n, 0, UINT64_MAX);
			log_error("%s: %s is the store of device %s already", s->name, s->path,
				  other ? device_name(other) : "?");
			device_put(other);
			return -1;
		}
		if (r < 0) {
			log_error("%s: %s", s->name, strerror(-r));
			return -1;
		}
	}
	return 0;
}

static int open_listeners(struct daemon *d)
{
	char err[512];

	if (d->opt.n_listen == 0) {
		int n = listeners_from_systemd(&d->listeners);

		if (n < 0)
			return -1;
		if (n == 0 && d->opt.fuse_dir)
			return 0; /* the FUSE directory is the only export */
		if (n == 0) {
			fprintf(stderr, "bdfilterd: nothing to listen on: give --nbd-listen ADDR, "
					"--fuse-dir DIR, or start it with systemd socket activation\n");
			return -1;
		}
		d->n_listeners = (size_t)n;
		/* Activated by systemd or by a client (nbdinfo -- [ ... ]): stay in front. */
		d->opt.foreground = true;
		return 0;
	}

	/* Check every address before binding any. */
	struct listen_addr *addrs = calloc(d->opt.n_listen, sizeof(*addrs));
	int r = 0;

	d->listeners = calloc(d->opt.n_listen, sizeof(*d->listeners));
	if (!addrs || !d->listeners) {
		free(addrs);
		return -1;
	}
	for (size_t i = 0; i < d->opt.n_listen && r == 0; i++)
		if (listen_addr_parse(d->opt.listen[i], &addrs[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "bdfilterd: --nbd-listen %s\n", err);
			r = -1;
		}
	for (size_t i = 0; i < d->opt.n_listen && r == 0; i++) {
		if (listener_open(&addrs[i], &d->listeners[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "bdfilterd: %s\n", err);
			r = -1;
		} else {
			d->n_listeners++;
		}
	}
	for (size_t i = 0; i < d->opt.n_listen; i++)
		listen_addr_free(&addrs[i]);
	free(addrs);
	return r;
}

/* Each listener's TLS mode: --tls if given; otherwise none on what only this
 * machine reaches, and required on the rest, which then needs credentials. */
static int set_listener_tls(struct daemon *d)
{
	for (size_t i = 0; i < d->n_listeners; i++) {
		struct listener *l = &d->listeners[i];

		if (d->opt.tls_mode_set)
			l->tls = d->opt.tls_mode;
		else
			l->tls = listener_default_tls(l);
		if (l->tls != NBD_TLS_OFF && !d->tls) {
			fprintf(stderr, "bdfilterd: %s can be reached from other machines: NBD there needs TLS "
					"(--tls-creds DIR or --tls-psk FILE), or --tls off to serve it in the clear\n",
				l->desc);
			return -1;
		}
	}
	if (d->tls) {
		bool used = false;

		for (size_t i = 0; i < d->n_listeners; i++)
			used |= d->listeners[i].tls != NBD_TLS_OFF;
		if (!used)
			log_warn("TLS credentials given but no listener offers TLS (--tls on or require)");
	}
	return 0;
}

/* The URI of each listener that has one, for status. */
static int listener_uris(struct daemon *d)
{
	char uri[512];

	d->nbd_uris = calloc(d->n_listeners ? d->n_listeners : 1, sizeof(*d->nbd_uris));
	if (!d->nbd_uris) {
		log_error("out of memory");
		return -1;
	}
	for (size_t i = 0; i < d->n_listeners; i++) {
		if (listener_uri(&d->listeners[i], uri, sizeof(uri)) < 0) {
			log_info("%s: no NBD URI names it; status leaves it out", d->listeners[i].desc);
			continue;
		}
		if (!(d->nbd_uris[d->n_nbd_uris] = strdup(uri))) {
			log_error("out of memory");
			return -1;
		}
		d->n_nbd_uris++;
	}
	return 0;
}

/* The dm userspace-log server and its transports, bound before we fork so
 * that a bad path is said on stderr; served once the signal mask is set. */
static int open_dirty_logs(struct daemon *d)
{
	struct ulog_server_config cfg = { .state_dir = d->opt.state_dir };

	if (!d->opt.dm_ulog && !d->opt.dm_ulog_listen)
		return 0;
	if (ulog_server_new(&cfg, &d->ulog) < 0)
		return -1;
	if (d->opt.dm_ulog && ulog_connector_open(d->ulog, &d->ulog_cn) < 0)
		return -1;
	if (d->opt.dm_ulog_listen && ulog_seqpacket_open(d->ulog, d->opt.dm_ulog_listen, &d->ulog_sp) < 0)
		return -1;
	if (d->ulog_sp)
		log_info("dirty logs on unix:%s (SOCK_SEQPACKET)", d->opt.dm_ulog_listen);
	if (d->ulog_cn)
		log_info("dirty logs on the netlink connector");
	return 0;
}

/* Fork into the background. The parent exits 0 once the child is serving, so
 * a script can connect as soon as bdfilterd returns. READY_FD gets the child's
 * end of the pipe. */
static int daemonize(int *ready_fd)
{
	int p[2];
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0) {
		close(p[1]);
		/* EOF without a byte: the child failed (and said why). */
		_exit(read(p[0], &c, 1) == 1 ? 0 : 1);
	}
	close(p[0]);
	if (setsid() < 0)
		return -1;
	if (fork() > 0)
		_exit(0);
	if (chdir("/") < 0)
		return -1;
	*ready_fd = p[1];
	return 0;
}

static void detach_stdio(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return;
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
}

/* Opened before daemonizing, so that a path we cannot write is reported on
 * the terminal that started us; the pid is written once it is final. */
static int pidfile_open(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		log_error("cannot write pidfile %s: %s", path, strerror(errno));
	return fd;
}

static int pidfile_write(int fd, const char *path)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	int r = write(fd, buf, n) == n ? 0 : -1;

	if (r < 0)
		log_error("cannot write pidfile %s: %s", path, strerror(errno));
	close(fd);
	return r;
}

static int serve(struct daemon *d)
{
	struct pollfd *pfd = calloc(d->n_listeners + 1, sizeof(*pfd));

	if (!pfd)
		return -1;
	pfd[0].fd = d->sigfd;
	pfd[0].events = POLLIN;
	for (size_t i = 0; i < d->n_listeners; i++) {
		pfd[i + 1].fd = d->listeners[i].fd;
		pfd[i + 1].events = POLLIN;
	}
	for (;;) {
		if (poll(pfd, d->n_listeners + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents) {
			struct signalfd_siginfo si;

			if (read(d->sigfd, &si, sizeof(si)) == sizeof(si))
				log_info("signal %u: shutting down", si.ssi_signo);
			break;
		}
		for (size_t i = 0; i < d->n_listeners; i++)
			if (pfd[i + 1].revents & POLLIN)
				listener_accept(&d->listeners[i], d->nbd);
	}
	free(pfd);
	return 0;
}

static void teardown(struct daemon *d)
{
	/* Outside in: no new control requests or NBD clients, answer what is in
	 * flight, then release the devices (flushing them). */
	atomic_store(&d->control_ctx.stopping, true);
	control_server_stop(d->control);
	if (!d->control && d->control_fd >= 0) {
		close(d->control_fd);
		unlink(d->opt.control);
	}
	for (size_t i = 0; i < d->n_listeners; i++)
		listener_close(&d->listeners[i]);
	free(d->listeners);
	for (size_t i = 0; i < d->n_nbd_uris; i++)
		free(d->nbd_uris[i]);
	free(d->nbd_uris);
	/* The dirty logs are written as they are freed; the state file keeps
	 * them live for the kernel's CTR + RESUME after a restart. */
	ulog_transport_stop(d->ulog_cn);
	ulog_transport_stop(d->ulog_sp);
	ulog_server_free(d->ulog);
	if (d->nbd)
		nbd_server_shutdown(d->nbd);
	/* Before the devices go: a loop device on a file may still be writing. */
	fuse_export_shutdown(d->fuse);
	if (d->reg) {
		size_t n;
		struct device **devs = registry_list(d->reg, &n);

		for (size_t i = 0; devs && i < n; i++) {
			mirror_shutdown(devs[i]);
			device_put(devs[i]);
		}
		free(devs);
	}
	if (d->bs_ready) {
		blksnap_fini(&d->bs);
		/* No client is left to write: each tracker saves its map CLEAN
		 * as its device closes (drained, after its last write). */
		blksnap_stopping(&d->bs);
	}
	registry_free(d->reg);
	nbd_server_free(d->nbd);
	nbd_tls_free(d->tls);
	fuse_export_free(d->fuse);
	if (d->wrote_pidfile)
		unlink(d->opt.pidfile);
	if (d->sigfd >= 0)
		close(d->sigfd);
	if (d->state_lock_fd >= 0) /* after the devices: their maps are saved */
		close(d->state_lock_fd);
	options_free(&d->opt);
}

int main(int argc, char **argv)
{
	struct daemon d = { .sigfd = -1, .control_fd = -1, .state_lock_fd = -1 };
	struct registry_observer nbd_observer, fuse_observer, state_observer;
	char err[512];
	struct nbd_server_config cfg = { 0 };
	struct control_access access;
	int r, ready_fd = -1, pid_fd = -1, rc = 1;
	sigset_t mask;

	r = options_parse(argc, argv, &d.opt);
	if (r != 0) {
		options_free(&d.opt);
		return r > 0 ? 0 : 1;
	}
	access = (struct control_access){ .group = d.opt.control_group != NULL, .gid = d.opt.control_gid };
	log_set_level(d.opt.log_level);
	signal(SIGPIPE, SIG_IGN);
	/* Blocked from the start, before any socket appears and any thread
	 * starts: every thread inherits the mask, and a SIGTERM that comes
	 * while we start up waits for the signalfd (made after the fork), so
	 * that it stops us cleanly rather than kill us. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	params_fixup(&d.opt.params, warn_param);

	cfg.threads = d.opt.threads;
	cfg.handshake_timeout_ms = d.opt.handshake_timeout_s * 1000u;
	cfg.max_connections = d.opt.max_connections;
	cfg.max_inflight = d.opt.max_inflight;
	cfg.max_inflight_conn = d.opt.max_inflight_conn;
	if (d.opt.tls_creds || d.opt.tls_psk) {
		struct nbd_tls_config tcfg = {
			.creds_dir = d.opt.tls_creds, .psk_file = d.opt.tls_psk,
			.verify_peer = d.opt.tls_verify_peer, .authz = d.opt.tls_authz,
		};

		if (nbd_tls_new(&tcfg, &d.tls, err, sizeof(err)) < 0) {
			fprintf(stderr, "bdfilterd: %s\n", err);
			goto out;
		}
		cfg.tls = d.tls;
	}
	if (registry_new(&d.reg) < 0 || nbd_server_new(&cfg, &d.nbd) < 0)
		goto out;
	blksnap_init(&d.bs, &d.opt.params, d.reg);
	d.bs_ready = true;
	if (d.opt.state_dir) {
		char *abs;

		if (cbt_store_dir_prepare(d.opt.state_dir, &abs, &d.state_lock_fd) < 0)
			goto out;
		free(d.opt.state_dir);
		d.opt.state_dir = abs;
		d.bs.state_dir = abs;
		log_info("CBT state directory %s", abs);
	}
	if (d.opt.state_dir) {
		state_observer = (struct registry_observer){ state_device_added, NULL, &d.bs };
		registry_observe(d.reg, &state_observer);
	}
	nbd_observer = (struct registry_observer){ nbd_device_added, nbd_device_removed, d.nbd };
	registry_observe(d.reg, &nbd_observer);
	if (d.opt.fuse_dir) {
		/* Mounted before forking, so a bad directory is reported here;
		 * served once the signal mask is set (below). */
		struct fuse_export_config fcfg = {
			.dir = d.opt.fuse_dir, .threads = d.opt.threads, .grace_ms = FUSE_GRACE_MS,
		};

		if (fuse_export_new(&fcfg, &d.fuse) < 0)
			goto out;
		fuse_observer = (struct registry_observer){ fuse_device_added, fuse_device_removed, d.fuse };
		registry_observe(d.reg, &fuse_observer);
	}
	/* The dirty logs' socket before the NBD listeners: a client that waits
	 * for the NBD socket finds the others there. */
	if (open_devices(&d) < 0 || open_dirty_logs(&d) < 0 || open_listeners(&d) < 0 ||
	    set_listener_tls(&d) < 0 || listener_uris(&d) < 0)
		goto out;
	if (d.opt.control) {
		d.control_fd = control_socket_bind(d.opt.control, &access, err, sizeof(err));
		if (d.control_fd < 0) {
			fprintf(stderr, "bdfilterd: control socket: %s\n", err);
			goto out;
		}
	}

	if (d.opt.pidfile) {
		pid_fd = pidfile_open(d.opt.pidfile);
		if (pid_fd < 0)
			goto out;
		d.wrote_pidfile = true;
	}

	if (!d.opt.foreground) {
		if (daemonize(&ready_fd) < 0) {
			log_error("cannot daemonize: %s", strerror(errno));
			goto out;
		}
		log_use_syslog(true);
		detach_stdio();
	}
	if (pid_fd >= 0) {
		r = pidfile_write(pid_fd, d.opt.pidfile);
		pid_fd = -1;
		if (r < 0)
			goto out;
	}

	d.sigfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (d.sigfd < 0) {
		log_error("signalfd: %s", strerror(errno));
		goto out;
	}

	if (d.fuse && fuse_export_start(d.fuse) < 0)
		goto out;
	if ((d.ulog_cn && ulog_transport_start(d.ulog_cn) < 0) || (d.ulog_sp && ulog_transport_start(d.ulog_sp) < 0))
		goto out;
	/* Threads of their own: after the fork and the signal mask. */
	mirror_restore_all(d.reg, d.opt.state_dir);
	d.veto.fuse_dir = d.fuse ? fuse_export_dir(d.fuse) : NULL;
	d.veto.state_dir = d.opt.state_dir;
	d.bs.storage_veto = storage_veto_check;
	d.bs.veto_opaque = &d.veto;
	if (d.control_fd >= 0) {
		d.control_ctx.reg = d.reg;
		d.control_ctx.fuse_dir = d.fuse ? fuse_export_dir(d.fuse) : NULL;
		d.control_ctx.bs = &d.bs;
		d.control_ctx.state_dir = d.opt.state_dir;
		d.control_ctx.ulog = d.ulog;
		d.control_ctx.nbd_uris = d.nbd_uris;
		d.control_ctx.n_nbd_uris = d.n_nbd_uris;
		d.control_ctx.started = time(NULL);
		atomic_init(&d.control_ctx.stopping, false);
		r = control_server_start(d.control_fd, d.opt.control, &access, control_handlers, &d.control_ctx,
					 &d.control);
		if (r < 0) {
			log_error("cannot start the control server: %s", strerror(-r));
			goto out;
		}
		if (access.group)
			log_info("control socket %s, for group %s too", d.opt.control, d.opt.control_group);
		else
			log_info("control socket %s", d.opt.control);
	}
	for (size_t i = 0; i < d.n_listeners; i++)
		log_info("listening on %s%s", d.listeners[i].desc,
			 d.listeners[i].tls == NBD_TLS_REQUIRE ? " (TLS required)"
			 : d.listeners[i].tls == NBD_TLS_ON ? " (TLS offered)" : "");
	if (ready_fd >= 0) {
		if (write(ready_fd, "", 1) != 1)
			log_warn("cannot tell the parent we are ready: %s", strerror(errno));
		close(ready_fd);
		ready_fd = -1;
	}
	if (serve(&d) == 0)
		rc = 0;
out:
	if (ready_fd >= 0)
		close(ready_fd);
	if (pid_fd >= 0)
		close(pid_fd);
	teardown(&d);
	if (rc == 0)
		log_info("stopped");
	return rc;
}
