/* The client's side of the control socket, shared by bdfilter and
 * bdfilter-backup: connect, send one request, read its one response, and
 * unpack a refusal into its errno and the daemon's message. */
#ifndef BDF_CONTROL_CLIENT_H
#define BDF_CONTROL_CLIENT_H

#include <stddef.h>

#include <json-c/json.h>

#include "control/wire.h"

struct control_client {
	int fd;
	struct line_reader lr;
};

/* $BDFILTER_CONTROL if set and not empty, else WIRE_DEFAULT_SOCKET. */
const char *control_default_path(void);

/* Connect to PATH. 0, or a negative errno with ERR saying why (and what to
 * check: the daemon, or who may use its socket). */
int control_open(struct control_client *c, const char *path, char *err, size_t errlen);
void control_close(struct control_client *c);

/* Send COMMAND with ARGS (may be NULL), read the response. 0 and *RESP (the
 * whole {"ok": ...} object, the caller's), or a negative errno with ERR
 * saying what went wrong on the way ("sending the request: ...", "the daemon
 * closed the connection", "malformed response from the daemon"). */
int control_call(struct control_client *c, const char *command, json_object *args, json_object **resp,
		 char *err, size_t errlen);

/* control_call, unpacked: 0 and *RESULT (the caller's; may be NULL when RESULT
 * is NULL); a refusal as the negative of its errno, with ERR "ENAME: message";
 * a failure on the way as control_call's. */
int control_request(struct control_client *c, const char *command, json_object *args, json_object **result,
		    char *err, size_t errlen);

#endif
