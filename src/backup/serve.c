/* serve: a restore point as a read-only NBD export, in the foreground until
 * SIGINT or SIGTERM. The image (image.h) is a core device served by the
 * project's own NBD server on one listener (unix:PATH or tcp:HOST:PORT), with
 * bdfilterd's TLS rule: TCP that other machines can reach needs credentials.
 * The repository's read lock is held throughout. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/export.h"
#include "backup/image.h"
#include "backup/util.h"
#include "common/log.h"
#include "core/device.h"
#include "nbd/nbd_listen.h"
#include "nbd/nbd_server.h"
#include "nbd/nbd_tls.h"

/* Request workers per connection: reads wait on the data files, and a
 * client such as nbdcopy keeps several in flight. */
#define SERVE_THREADS 8

/* Accept and serve until a signal says stop. */
static int serve_loop(int sigfd, struct listener *l, struct nbd_server *srv)
{
	struct pollfd pfd[2] = { { .fd = sigfd, .events = POLLIN }, { .fd = l->fd, .events = POLLIN } };

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			bk_error("poll: %s", strerror(errno));
			return -errno;
		}
		if (pfd[0].revents) {
			struct signalfd_siginfo si;

			if (read(sigfd, &si, sizeof(si)) == sizeof(si))
				log_info("signal %u: shutting down", si.ssi_signo);
			return 0;
		}
		if (pfd[1].revents & POLLIN)
			listener_accept(l, srv);
	}
}

int serve_run(const struct serve_opts *o)
{
	struct image_open_opts io = { .repo = o->repo, .at = o->at, .key_file = o->key_file,
				      .device = o->device };
	struct nbd_server_config cfg = { .threads = SERVE_THREADS };
	struct listener l = { .fd = -1 };
	struct listen_addr a = { 0 };
	struct nbd_server *srv = NULL;
	struct nbd_tls *tls = NULL;
	struct device *dev = NULL;
	struct image *im = NULL;
	char err[512], devname[32], uri[16384], *name = NULL, *desc = NULL;
	unsigned at;
	int sigfd, r = -EINVAL;

	log_set_ident("bdfilter-backup");
	log_set_level(LOG_LEVEL_WARN); /* the ready line, then only what goes wrong */
	if ((sigfd = export_signals()) < 0)
		return -EIO;
	if (listen_addr_parse(o->listen, &a, err, sizeof(err)) < 0) {
		bk_error("--listen %s", err);
		goto out;
	}
	if (o->tls_creds || o->tls_psk) {
		struct nbd_tls_config tcfg = { .creds_dir = o->tls_creds, .psk_file = o->tls_psk };

		if (nbd_tls_new(&tcfg, &tls, err, sizeof(err)) < 0) {
			bk_error("%s", err);
			goto out;
		}
		cfg.tls = tls;
	}
	if ((r = image_open(&io, &im)) < 0)
		goto out;
	at = image_backup(im);
	snprintf(devname, sizeof(devname), "backup-%u", at);
	name = strdup(o->export_name ? o->export_name : devname);
	desc = bk_format("backup %u of %s", at, o->repo);
	if (!name || !desc) {
		image_close(im);
		bk_error("out of memory");
		r = -ENOMEM;
		goto out;
	}
	if ((r = export_device_new(im, devname, &dev)) < 0)
		goto out;
	if ((r = nbd_server_new(&cfg, &srv)) < 0 ||
	    (r = nbd_server_add_export(srv, dev, name, desc, true)) < 0) {
		bk_error("cannot serve export '%s': %s", name, strerror(-r));
		goto out;
	}

	if (listener_open(&a, &l, err, sizeof(err)) < 0) {
		bk_error("%s", err);
		r = -EIO;
		goto out;
	}
	l.tls = tls ? NBD_TLS_REQUIRE : listener_default_tls(&l);
	if (l.tls != NBD_TLS_OFF && !tls) {
		bk_error("%s can be reached from other machines: NBD there needs TLS (--tls-creds DIR or "
			 "--tls-psk FILE)",
			 l.desc);
		r = -EPERM;
		goto out;
	}
	if (listener_export_uri(&l, name, uri, sizeof(uri)) < 0) {
		bk_error("%s: no URI names export '%s' there", l.desc, name);
		r = -EINVAL;
		goto out;
	}
	printf("serving backup %u of %s on %s\n", at, o->repo, uri);
	fflush(stdout);
	r = serve_loop(sigfd, &l, srv);
out:
	listener_close(&l);
	if (srv)
		nbd_server_shutdown(srv);
	nbd_server_free(srv);
	device_put(dev); /* the last reference: the image closes, the lock goes */
	nbd_tls_free(tls);
	listen_addr_free(&a);
	free(name);
	free(desc);
	close(sigfd);
	return r;
}
