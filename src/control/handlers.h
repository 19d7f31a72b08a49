/* The daemon's command handlers: control requests turned into calls on the
 * device registry, the devices and their filters (core/ and filters/ only). */
#ifndef BDF_CONTROL_HANDLERS_H
#define BDF_CONTROL_HANDLERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "control/control_server.h"

struct blksnap;
struct registry;
struct ulog_server;

struct control_ctx {
	struct registry *reg;
	struct blksnap *bs;
	const char *fuse_dir; /* the FUSE export's mount point, or NULL */
	const char *state_dir; /* --state-dir, or NULL */
	struct ulog_server *ulog; /* the dm userspace-log server, or NULL */
	char **nbd_uris; /* how to reach each NBD listener (listener_uri) */
	size_t n_nbd_uris;
	time_t started;
	atomic_bool stopping; /* set at shutdown: waits end early */
};

extern const control_handler control_handlers[CMD_COUNT];

#endif
