/* Listening sockets for NBD clients: unix:PATH, tcp:HOST:PORT, and sockets
 * passed by systemd; the TLS a listener asks for by default, and the hand-over
 * of an accepted connection to the server. bdfilterd and bdfilter-backup's
 * serve share them. */
#ifndef BDF_NBD_LISTEN_H
#define BDF_NBD_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

#include "nbd/nbd_tls.h"

struct listen_addr {
	enum { LISTEN_UNIX, LISTEN_TCP } kind;
	char *path; /* unix */
	char *host; /* tcp */
	char *port; /* tcp */
};

struct listener {
	int fd;
	char *unix_path; /* a socket we created, unlinked at close */
	char desc[128];
	enum nbd_tls_mode tls; /* set by the daemon once its options are known */
};

struct nbd_server;

/* Parse ADDR; on error write a message to ERR ("'ADDR': expected ...", for the
 * caller to put after its option's name) and return -1. */
int listen_addr_parse(const char *addr, struct listen_addr *a, char *err, size_t errlen);
void listen_addr_free(struct listen_addr *a);

/* Bind and listen (non-blocking, close-on-exec). -1 and ERR on failure. */
int listener_open(const struct listen_addr *a, struct listener *l, char *err, size_t errlen);
void listener_close(struct listener *l);

/* Only this machine can connect: a Unix socket, or TCP bound to a loopback
 * address (asked of the socket, so that systemd's sockets count too). */
bool listener_is_local(const struct listener *l);
/* The TLS a listener needs unless told otherwise: none on what only this
 * machine reaches, required on the rest (which then needs credentials). */
enum nbd_tls_mode listener_default_tls(const struct listener *l);

/* Accept one connection on L (non-blocking: nothing waiting is no error) and
 * hand it to SRV with L's TLS mode. Out of descriptors or memory, it says so
 * and pauses 100 ms, so that a poll loop does not spin. */
void listener_accept(struct listener *l, struct nbd_server *srv);

/* The NBD URI that reaches L from this machine, with an empty export name
 * (clients put theirs after the authority's '/'): nbd+unix:///?socket=PATH
 * or nbd://HOST:PORT/, nbds for a listener that requires TLS; an address
 * bound to every interface is given as the loopback one. Asked of the socket,
 * so that systemd's count too; a relative Unix path is made absolute from
 * the working directory, so call it before the daemon leaves it. 0, or -1 for a socket no URI names (an
 * abstract or unnamed Unix socket, another family) or when LEN is short. */
int listener_uri(const struct listener *l, char *buf, size_t len);
/* The same with export NAME in it (percent-encoded): nbd+unix:///NAME?socket=
 * PATH or nbd://HOST:PORT/NAME. */
int listener_export_uri(const struct listener *l, const char *name, char *buf, size_t len);

/* Sockets passed with systemd's LISTEN_PID/LISTEN_FDS. Returns how many (0 if
 * none were passed), and unsets the variables so children do not inherit them. */
int listeners_from_systemd(struct listener **out);

#endif
