/* What the parts of the NBD server share: the server, its exports and connections,
 * socket I/O, and the entry points of each phase (nbd-internal). */
#ifndef BDF_NBD_INTERNAL_H
#define BDF_NBD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/meta_context.h"
#include "nbd/nbd_server.h"
#include "nbd/nbd_transport.h"

struct extents;
struct nbd_export;

#define NBD_RECV_BUFFER (64u * 1024)

/* A metadata context an export offers: base:allocation (the device's holes
 * and zeroes), and whatever the device's stack publishes (a snapshot image's
 * qemu:dirty-bitmap:GENERATION/N). Contexts are values: a connection keeps a
 * copy of each one it selected, and a published one is found again by name
 * at each request, so a filter detached meanwhile answers nothing. */
struct nbd_meta_context {
	char name[META_CONTEXT_NAME_MAX];
	bool base_allocation;
};

struct nbd_export {
	char *name;
	char *description; /* NULL: the device's (see nbd_export_description) */
	struct device *dev;
	bool readonly;
	atomic_int refs;
};

/* Payload memory (nbd_budget.c): on the whole server here, per connection
 * in struct nbd_conn; all of it guarded by lock. */
#define NBD_PAYLOAD_CLASSES 8 /* large buffers: 256 KiB, 512 KiB, ... 32 MiB */
struct nbd_budget {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* the total went down */
	uint64_t limit, conn_limit;
	uint64_t used; /* held by requests */
	/* Waiters for the total are served in turn, so that a large request is
	 * not overtaken forever by small ones. */
	uint64_t next_ticket, serving;
	unsigned waiting;
	/* Large buffers no request holds, kept for the next one of their size
	 * (linked through their first bytes); used + cached <= limit. */
	void *cache[NBD_PAYLOAD_CLASSES];
	uint64_t cached, cache_max;
};

struct nbd_server {
	struct nbd_server_config cfg;
	pthread_mutex_t lock;
	pthread_cond_t conns_gone;
	struct nbd_export **exports; /* guarded by lock */
	size_t n_exports;
	struct nbd_conn *conns; /* guarded by lock */
	size_t n_conns;
	uint64_t next_conn_id;
	bool shutting_down;
	/* Connections refused over max_connections since the last log line,
	 * and when that was (guarded by lock). */
	unsigned long refused;
	uint64_t refused_logged_ns;
	struct nbd_budget budget;
};

/* A context selected with NBD_OPT_SET_META_CONTEXT. */
struct nbd_meta_selected {
	uint32_t id;
	struct nbd_meta_context ctx;
};

struct nbd_conn {
	struct nbd_server *srv;
	struct nbd_conn *next, *prev; /* srv->conns, guarded by srv->lock */
	struct nbd_transport tr; /* the socket, or later a TLS session on it */
	uint64_t id;
	char peer[64];
	uint64_t deadline_ns; /* handshake deadline on CLOCK_MONOTONIC; 0: none */
	enum nbd_tls_mode tls_mode;
	bool tls_active; /* after a STARTTLS whose handshake succeeded */

	/* negotiated in the handshake */
	bool no_zeroes;
	bool structured;
	bool extended;
	/* The GO that started transmission asked for NBD_INFO_BLOCK_SIZE: the
	 * client agreed to our maximum payload (NBD_EXPORT_NAME never does). */
	bool block_size_negotiated;
	unsigned n_options;
	char *meta_export; /* the export SET_META_CONTEXT named */
	struct nbd_meta_selected *meta;
	size_t n_meta;
	struct nbd_export *exp; /* holds a reference in transmission */
	uint16_t eflags;

	/* Bytes received but not yet consumed: one recv() often brings several
	 * small requests. Guarded by read_lock (the handshake is single-threaded). */
	size_t rstart, rend;
	bool no_readahead; /* the last request carried a large payload */
	char rbuf[NBD_RECV_BUFFER];

	/* transmission */
	pthread_mutex_t read_lock;
	pthread_mutex_t write_lock;
	atomic_bool closing;
	/* this connection's share of srv->budget (guarded by its lock) */
	uint64_t budget_used;
	unsigned budget_waiting;
	pthread_cond_t budget_cond;
};

/* A connection on the accepted socket FD (which it owns from now on), not yet
 * in the server's list; NULL if out of memory (FD is then closed). */
struct nbd_conn *nbd_conn_new(struct nbd_server *srv, int fd);
/* Drop C's export reference and close its transport. */
void nbd_conn_free(struct nbd_conn *c);

/* Connection I/O through c->tr. 0 on success, -1 when the connection is done
 * (EOF, error, timeout). */
int conn_recv(struct nbd_conn *c, void *buf, size_t len);
int conn_discard(struct nbd_conn *c, uint64_t len);
int conn_sendv(struct nbd_conn *c, struct iovec *iov, int n);
/* shutdown(2) HOW on C's transport: wakes a worker blocked in recv or send. */
void conn_shutdown(struct nbd_conn *c, int how);

/* What clients see as EXP's description. */
const char *nbd_export_description(const struct nbd_export *exp);

/* Payload memory (nbd_budget.c). get waits until a buffer of LEN bytes
 * (at most NBD_MAX_PAYLOAD) fits in both C's and the server's bound, then
 * takes one: NULL (nothing held) only if the system has no memory. put gives
 * it back (BUF may be NULL). */
void nbd_budget_init(struct nbd_budget *b, uint64_t limit, uint64_t conn_limit);
void nbd_budget_destroy(struct nbd_budget *b);
void *nbd_payload_get(struct nbd_conn *c, size_t len);
void nbd_payload_put(struct nbd_conn *c, void *buf, size_t len);

/* Exports: look up NAME ("" is the default) and take a reference; NULL if unknown. */
struct nbd_export *nbd_export_get(struct nbd_server *srv, const char *name);
void nbd_export_put(struct nbd_export *exp);
/* Call FN for each export (for NBD_OPT_LIST); stops at the first nonzero return. */
int nbd_export_foreach(struct nbd_server *srv, int (*fn)(struct nbd_export *, void *), void *opaque);

/* Handshake: 0 and c->exp set when transmission should start, -1 to close. */
int nbd_handshake(struct nbd_conn *c);
/* The transmission flags of C's export, given what C negotiated. */
uint16_t nbd_export_flags(const struct nbd_conn *c, const struct nbd_export *exp);

/* Transmission: serve requests until the client or the server ends the session. */
void nbd_transmission(struct nbd_conn *c);

/* Metadata contexts. */
/* Call FN with every context of EXP that QUERY names (LIST semantics: a query
 * ending in ':' is a namespace or prefix wildcard; NULL matches all). */
void nbd_meta_match(struct nbd_export *exp, const char *query, bool wildcards,
		    void (*fn)(const struct nbd_meta_context *, void *), void *opaque);
struct nbd_request;
/* Not nbd_block_status: libnbd's function of that name is called by
 * bdfilter-backup, which links this server too. */
void nbd_serve_block_status(struct nbd_conn *c, const struct nbd_request *req);

/* A request as decoded from the wire. */
struct nbd_request {
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t offset;
	uint64_t length; /* effect length, or payload length with PAYLOAD_LEN */
};

/* Replies (transmission). Each takes the write lock; -1 if the connection broke. */
int nbd_reply_ok(struct nbd_conn *c, const struct nbd_request *req);
int nbd_reply_error(struct nbd_conn *c, const struct nbd_request *req, int err, const char *msg);
/* One structured/extended chunk whose payload is IOV[1..n-1] (IOV[0] is filled in). */
int nbd_reply_chunk(struct nbd_conn *c, const struct nbd_request *req, uint16_t flags, uint16_t type,
		    struct iovec *iov, int n);
/* Map a negative errno to an NBD error. */
uint32_t nbd_errno(int err);

#endif
