/* The transports that carry dm userspace-log requests to a ulog_server, each
 * on a thread of its own, each packet a struct cn_msg and its request:
 *  - the netlink connector (CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG), where the
 *    kernel's dm-log-userspace sends them, as cmirrord serves it;
 *  - a Unix SOCK_SEQPACKET socket carrying the same packets, for clients in
 *    user space (tests, tools) and kernels that are not ours to reach. */
#ifndef BDF_DIRTYLOG_ULOG_TRANSPORT_H
#define BDF_DIRTYLOG_ULOG_TRANSPORT_H

struct ulog_server;
struct ulog_transport;

/* Listen on PATH (0600); -errno with the reason logged. */
int ulog_seqpacket_open(struct ulog_server *s, const char *path, struct ulog_transport **out);
/* Join the connector's DM group; -errno with the reason logged. */
int ulog_connector_open(struct ulog_server *s, struct ulog_transport **out);
/* Start serving, on a thread of its own (apart from opening, so that a
 * daemon opens before it forks and serves after). */
int ulog_transport_start(struct ulog_transport *t);
/* Stop the thread if it runs, close every socket, unlink the listening one. */
void ulog_transport_stop(struct ulog_transport *t);

#endif
