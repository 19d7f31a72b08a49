/* The dm userspace-log server: the table of logs by (uuid, luid) and the one
 * decoder every transport calls. A request is a struct dm_ulog_request and
 * its data, as the kernel's dm-log-userspace sends it; the answer echoes the
 * header (seq, uuid, luid, type) with `error` (a negative errno) and the
 * reply's data, or is an ack alone (what cmirrord sends for a request type 0:
 * "send it again", EAGAIN).
 *
 * With a state directory the server remembers which logs are live (the file
 * `dirtylogs` there), so that after a restart the kernel's CTR + RESUME retry
 * rebuilds each log as it was: a disk log from its disk whatever [no]sync
 * says, a core log with every region to resync. */
#ifndef BDF_DIRTYLOG_ULOG_SERVER_H
#define BDF_DIRTYLOG_ULOG_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/dm-log-userspace.h>

/* The kernel's cap on one connector message (cn_msg + request + data):
 * DM_ULOG_PREALLOCED_SIZE in dm-log-userspace-transfer.c. */
#define ULOG_MSG_MAX 512u
#define ULOG_CN_HDR 20u		/* sizeof(struct cn_msg) */
#define ULOG_REQUEST_MAX (ULOG_MSG_MAX - ULOG_CN_HDR)
#define ULOG_DATA_MAX (ULOG_REQUEST_MAX - sizeof(struct dm_ulog_request))

struct ulog_server;
struct dirty_log;

struct ulog_server_config {
	const char *state_dir;	/* NULL: no memory of live logs across restarts */
};

struct ulog_reply {
	size_t len;		/* bytes of BUF: header and data; 0: an ack alone */
	uint32_t ack;		/* with len 0: the positive errno the ack carries */
	unsigned char buf[ULOG_REQUEST_MAX];
};

int ulog_server_new(const struct ulog_server_config *cfg, struct ulog_server **out);
/* Every log is flushed and freed; the state file keeps them as live, so a
 * daemon stopped under a kernel mirror finds them again. */
void ulog_server_free(struct ulog_server *s);

/* Decode and answer one request of LEN bytes. Never fails: whatever is wrong
 * with the request is the reply's error, logged once at warn level. */
void ulog_server_handle(struct ulog_server *s, const void *req, size_t len, struct ulog_reply *out);

/* For the control commands: each log's uuid, luid and object, under the
 * table's lock (FN must not call back into the server). */
typedef void (*ulog_server_visit_fn)(void *opaque, const char *uuid, uint64_t luid,
				     const char *ctr, struct dirty_log *log);
void ulog_server_visit(struct ulog_server *s, ulog_server_visit_fn fn, void *opaque);

/* The connector's framing, shared by the transports: PKT of LEN bytes is a
 * struct cn_msg (idx 7, val 1) and its request. Writes the answer, a cn_msg
 * with the same seq and the reply (or len 0 and the ack), into OUT and returns
 * its length; 0 when the packet is not ours or has no cn_msg (dropped). */
size_t ulog_cn_handle(struct ulog_server *s, const void *pkt, size_t len, void *out, size_t outmax);

#endif
