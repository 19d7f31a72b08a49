/* The control socket: JSON lines in, JSON lines out, one thread per client.
 * It knows the wire format and the commands table, not what commands do: the
 * daemon hands it one handler per command. */
#ifndef BDF_CONTROL_CONTROL_SERVER_H
#define BDF_CONTROL_CONTROL_SERVER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "control/commands.h"

/* Fill RESULT (an empty object); return 0 or a negative errno with a message
 * in MSG (the errno's text is used if MSG is left empty). */
typedef int (*control_handler)(void *ctx, json_object *args, json_object *result, char *msg, size_t msglen);

struct control_server;

/* Who may use the control socket. Root and the daemon's own user always may;
 * with GROUP, a peer whose primary or any supplementary group is GID too.
 * Every other peer gets one EACCES line and is closed. */
struct control_access {
	bool group;
	gid_t gid;
};

/* Bind PATH: mode 0600, or 0660 and group ACC->gid with a group (the default
 * path's directory is made 0700 if missing, and 0750 of that group with one).
 * The fd, or -1 with a message in ERR. Separate from starting, so a daemon can
 * report a bad path before it forks. */
int control_socket_bind(const char *path, const struct control_access *acc, char *err, size_t errlen);
/* Serve LISTEN_FD (bound to PATH, which is unlinked at stop) on a thread, to
 * the peers ACC lets in. HANDLERS has CMD_COUNT entries. */
int control_server_start(int listen_fd, const char *path, const struct control_access *acc,
			 const control_handler *handlers, void *ctx, struct control_server **out);
/* Stop listening, end every client (a waiting command is cut short), join. */
void control_server_stop(struct control_server *cs);

/* Handle one request line; the response object is returned (for tests and the fuzzer). */
json_object *control_dispatch(const control_handler *handlers, void *ctx, const char *line, size_t len);

#endif
