/* The control wire format: one JSON object per line.
 *   request:  {"command": "cbtinfo", "args": {"device": "disk"}}
 *   response: {"ok": true, "result": {...}}
 *          or {"ok": false, "errno": "ENOENT", "code": 2, "message": "..."}
 * Shared by the daemon and the CLI. */
#ifndef BDF_CONTROL_WIRE_H
#define BDF_CONTROL_WIRE_H

#include <json-c/json.h>
#include <stddef.h>

#include "control/commands.h"

#define WIRE_MAX_MESSAGE (4u << 20) /* a line longer than this is refused */
#define WIRE_DEFAULT_SOCKET "/run/bdfilter/control.sock"

/* Check ARGS (a JSON object or NULL) against DEF: known keys, right types,
 * required ones present. 0, or -EINVAL with a message in ERR. */
int wire_check_args(const struct command_def *def, json_object *args, char *err, size_t errlen);

/* "ENOENT" for ENOENT (-ENOENT works too); "E?" + number when unknown. */
const char *wire_errno_name(int err);

/* Buffered line reader over a socket. */
struct line_reader {
	int fd;
	char *buf;
	size_t len, cap, consumed;
};

void line_reader_init(struct line_reader *lr, int fd);
void line_reader_free(struct line_reader *lr);
/* Next line (without '\n', NUL-terminated, valid until the next call) in *LINE.
 * Returns 1, 0 at EOF, -EMSGSIZE for a line over WIRE_MAX_MESSAGE (the rest of
 * it is skipped), or another negative errno. */
int line_reader_next(struct line_reader *lr, char **line, size_t *len);

/* Write OBJ as one line. 0 or a negative errno. */
int wire_send(int fd, json_object *obj);

#endif
