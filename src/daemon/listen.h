/* Listening sockets: unix:PATH, tcp:HOST:PORT, and sockets passed by systemd. */
#ifndef BDF_DAEMON_LISTEN_H
#define BDF_DAEMON_LISTEN_H

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

/* Parse ADDR; on error write a message to ERR and return -1. */
int listen_addr_parse(const char *addr, struct listen_addr *a, char *err, size_t errlen);
void listen_addr_free(struct listen_addr *a);

/* Bind and listen (non-blocking, close-on-exec). -1 and ERR on failure. */
int listener_open(const struct listen_addr *a, struct listener *l, char *err, size_t errlen);
void listener_close(struct listener *l);

/* Only this machine can connect: a Unix socket, or TCP bound to a loopback
 * address (asked of the socket, so that systemd's sockets count too). */
bool listener_is_local(const struct listener *l);

/* The NBD URI that reaches L from this machine, with an empty export name
 * (clients put theirs after the authority's '/'): nbd+unix:///?socket=PATH
 * or nbd://HOST:PORT/, nbds for a listener that requires TLS; an address
 * bound to every interface is given as the loopback one. Asked of the socket,
 * so that systemd's count too; a relative Unix path is made absolute from
 * the working directory, so call it before the daemon leaves it. 0, or -1 for a socket no URI names (an
 * abstract or unnamed Unix socket, another family) or when LEN is short. */
int listener_uri(const struct listener *l, char *buf, size_t len);

/* Sockets passed with systemd's LISTEN_PID/LISTEN_FDS. Returns how many (0 if
 * none were passed), and unsets the variables so children do not inherit them. */
int listeners_from_systemd(struct listener **out);

#endif
