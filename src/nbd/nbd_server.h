/* The NBD server: exports (devices by name), connections, and shutdown.
 * The daemon owns the listening sockets and hands each accepted one over. */
#ifndef BDF_NBD_SERVER_H
#define BDF_NBD_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "nbd/nbd_tls.h"

struct device;
struct nbd_server;

/* The largest READ or WRITE payload the server takes (nbd_proto.h's
 * NBD_MAX_PAYLOAD): the least a connection's in-flight bound may be. */
#define NBD_SERVER_MAX_PAYLOAD (32u << 20)

/* The defaults of the limits below (bdfilterd's options say the same). */
#define NBD_DEFAULT_MAX_CONNECTIONS 128u
#define NBD_DEFAULT_MAX_INFLIGHT    (512ull << 20)
/* A connection's share is an eighth of the total, so that one client cannot
 * take it all; never under the maximum payload, so that every request fits. */
#define NBD_INFLIGHT_CONN_SHARE     8u

struct nbd_server_config {
	unsigned threads;              /* request workers per connection */
	unsigned handshake_timeout_ms; /* 0: none */
	unsigned max_connections;      /* at once, handshakes included; 0: the default */
	/* READ and WRITE payload bytes in memory at once, in all and on one
	 * connection; 0: the default. The per-connection bound is raised to the
	 * maximum payload (32 MiB) and the total to the per-connection bound. */
	uint64_t max_inflight;
	uint64_t max_inflight_conn;
	/* Credentials for NBD_OPT_STARTTLS (owned by the caller, who frees
	 * them after nbd_server_free); NULL: TLS off on every connection. */
	struct nbd_tls *tls;
};

int nbd_server_new(const struct nbd_server_config *cfg, struct nbd_server **out);
/* Waits for every connection to end (call nbd_server_shutdown first). */
void nbd_server_free(struct nbd_server *srv);

/* Serve DEV as export NAME (the export holds a reference on DEV). The first
 * export added is also the default export "". DESCRIPTION NULL: the device's
 * own, as it is when a client asks (device_description). -EEXIST if NAME is
 * taken. */
int nbd_server_add_export(struct nbd_server *srv, struct device *dev, const char *name,
			  const char *description, bool readonly);

/* Stop offering export NAME; clients already on it go on until they close.
 * -ENOENT if there is none. */
int nbd_server_remove_export(struct nbd_server *srv, const char *name);

/* Take over an accepted connection: the server negotiates and serves it on its own
 * threads and closes FD when done. TLS is what the listener says (an ON or
 * REQUIRE with no credentials in the config is OFF). With max_connections open already, FD is
 * closed at once (the client sees EOF before the greeting) and -EBUSY returned;
 * the log says so (one line, then at most one every 10 s). */
int nbd_server_serve(struct nbd_server *srv, int fd, const char *peer, enum nbd_tls_mode tls);

/* Stop taking requests: every connection stops reading, answers what is in flight
 * and closes. Returns once all connections are gone. */
void nbd_server_shutdown(struct nbd_server *srv);

#endif
