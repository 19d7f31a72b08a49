/* The control socket's client side (see client.h). */
#include "control/client.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/unix_socket.h"

const char *control_default_path(void)
{
	const char *p = getenv("BDFILTER_CONTROL");

	return p && *p ? p : WIRE_DEFAULT_SOCKET;
}

int control_open(struct control_client *c, const char *path, char *err, size_t errlen)
{
	int fd = unix_socket_connect(path);

	c->fd = -1;
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to %s: %s (%s)", path, strerror(-fd),
			 fd == -EACCES || fd == -EPERM ? "root may use it, and bdfilterd's --control-group"
						       : "is bdfilterd running?");
		return fd;
	}
	c->fd = fd;
	line_reader_init(&c->lr, fd);
	return 0;
}

void control_close(struct control_client *c)
{
	if (c->fd < 0)
		return;
	line_reader_free(&c->lr);
	close(c->fd);
	c->fd = -1;
}

int control_call(struct control_client *c, const char *command, json_object *args, json_object **resp,
		 char *err, size_t errlen)
{
	json_object *req = json_object_new_object(), *o, *ok;
	char *line;
	size_t len;
	int r, rr;

	*resp = NULL;
	json_object_object_add(req, "command", json_object_new_string(command));
	json_object_object_add(req, "args", args ? json_object_get(args) : json_object_new_object());
	r = wire_send(c->fd, req);
	json_object_put(req);
	if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
		snprintf(err, errlen, "sending the request: %s", strerror(-r));
		return r;
	}
	/* Read even if the send failed: a daemon that refuses us says why in
	 * one line and closes, maybe before our request is out. */
	rr = line_reader_next(&c->lr, &line, &len);
	if (rr <= 0) {
		if (r < 0)
			snprintf(err, errlen, "sending the request: %s", strerror(-r));
		else
			snprintf(err, errlen, "%s", rr == 0 ? "the daemon closed the connection" : strerror(-rr));
		return r < 0 ? r : rr == 0 ? -ECONNRESET : rr;
	}
	o = json_tokener_parse(line);
	if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "ok", &ok)) {
		snprintf(err, errlen, "malformed response from the daemon");
		json_object_put(o);
		return -EPROTO;
	}
	*resp = o;
	return 0;
}

int control_request(struct control_client *c, const char *command, json_object *args, json_object **result,
		    char *err, size_t errlen)
{
	json_object *resp, *ok, *v, *e = NULL, *m = NULL, *code = NULL;
	int r = control_call(c, command, args, &resp, err, errlen), n;

	if (result)
		*result = NULL;
	if (r < 0)
		return r;
	json_object_object_get_ex(resp, "ok", &ok);
	if (json_object_get_boolean(ok)) {
		if (result && json_object_object_get_ex(resp, "result", &v))
			*result = json_object_get(v);
		json_object_put(resp);
		return 0;
	}
	json_object_object_get_ex(resp, "errno", &e);
	json_object_object_get_ex(resp, "message", &m);
	json_object_object_get_ex(resp, "code", &code);
	n = code ? json_object_get_int(code) : 0;
	snprintf(err, errlen, "%s: %s", e ? json_object_get_string(e) : "?", m ? json_object_get_string(m) : "");
	json_object_put(resp);
	return n > 0 ? -n : -EPROTO;
}
