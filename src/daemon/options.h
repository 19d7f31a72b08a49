/* bdfilterd's command line. */
#ifndef BDF_DAEMON_OPTIONS_H
#define BDF_DAEMON_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/log.h"
#include "blksnap/params.h"
#include "nbd/nbd_tls.h"

#define MAX_DEVICE_FILTERS 8

struct device_spec {
	char *name;
	char *path;
	bool readonly;
	char *filters[MAX_DEVICE_FILTERS];
	size_t n_filters;
};

struct options {
	bool foreground;
	char **listen; /* "unix:PATH" or "tcp:HOST:PORT" */
	size_t n_listen;
	struct device_spec *devices;
	size_t n_devices;
	char *pidfile;
	enum log_level log_level;
	unsigned threads;
	unsigned handshake_timeout_s;
	unsigned max_connections;   /* NBD connections at once */
	uint64_t max_inflight;      /* NBD payload bytes in memory, in all */
	uint64_t max_inflight_conn; /* ... on one connection (derived if not given) */
	char *control; /* control socket path; NULL: none */
	char *control_group; /* --control-group as given; NULL: root only */
	gid_t control_gid;   /* ... resolved at parse time */
	char *fuse_dir; /* FUSE export mount point; NULL: none */
	char *state_dir; /* where trackers keep their CBT maps; NULL: in memory only */
	bool dm_ulog; /* serve dirty logs on the netlink connector */
	char *dm_ulog_listen; /* ... and on this SEQPACKET socket; NULL: not */
	/* NBD over TLS: the mode on every listener if given (tls_mode_set),
	 * else off on Unix sockets and loopback, require beyond. */
	bool tls_mode_set;
	enum nbd_tls_mode tls_mode;
	char *tls_creds;
	char *tls_psk;
	bool tls_verify_peer;
	char *tls_authz;
	struct params params;
};

/* Parse ARGV. 0: run; 1: exit 0 (--help, --version printed); -1: error (printed). */
int options_parse(int argc, char **argv, struct options *o);
void options_free(struct options *o);

/* Parse a size: bytes, or a number with K, M, G or T (powers of 1024).
 * -1 if it is not one or is outside MIN..MAX (exposed for tests). */
int parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Parse a group: a numeric gid (it needs no /etc/group entry) or a group
 * name. 0, or -1 with a message in ERR (exposed for tests). */
int parse_group(const char *s, gid_t *out, char *err, size_t errlen);

/* Parse one --device value "NAME=PATH[,ro][,filter=NAME]..." (exposed for tests). */
int device_spec_parse(const char *arg, struct device_spec *d, char *err, size_t errlen);
void device_spec_free(struct device_spec *d);

#endif
