/* The control wire format (see wire.h). */
#include "control/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/io.h"

static const struct {
	int err;
	const char *name;
} errno_names[] = {
	{ EPERM, "EPERM" }, { ENOENT, "ENOENT" }, { ESRCH, "ESRCH" }, { EIO, "EIO" },
	{ ENOMEM, "ENOMEM" }, { EACCES, "EACCES" }, { EBUSY, "EBUSY" }, { EEXIST, "EEXIST" },
	{ ENODEV, "ENODEV" }, { EINVAL, "EINVAL" }, { ENOSPC, "ENOSPC" }, { ERANGE, "ERANGE" },
	{ ENODATA, "ENODATA" }, { EALREADY, "EALREADY" }, { ENOTSUP, "ENOTSUP" },
	{ ETIMEDOUT, "ETIMEDOUT" }, { EMSGSIZE, "EMSGSIZE" }, { EISDIR, "EISDIR" },
	{ ENOTDIR, "ENOTDIR" }, { EROFS, "EROFS" }, { EFBIG, "EFBIG" }, { ENOTTY, "ENOTTY" },
	{ ECONNREFUSED, "ECONNREFUSED" }, { EPROTO, "EPROTO" }, { ESHUTDOWN, "ESHUTDOWN" },
};

const char *wire_errno_name(int err)
{
	static __thread char buf[16];

	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
		if (errno_names[i].err == err)
			return errno_names[i].name;
	snprintf(buf, sizeof(buf), "E%d", err);
	return buf;
}

static const char *type_name(enum arg_type t)
{
	switch (t) {
	case ARG_STRING:
		return "a string";
	case ARG_UINT:
		return "an unsigned integer";
	case ARG_FLAG:
		return "a boolean";
	case ARG_RANGES:
		return "an array of [offset, count] pairs";
	case ARG_STRINGS:
		return "an array of strings";
	}
	return "?";
}

static bool is_uint(json_object *v)
{
	if (!json_object_is_type(v, json_type_int))
		return false;
	/* json-c keeps large values as uint64 when they do not fit int64 */
	return json_object_get_int64(v) >= 0 || json_object_get_uint64(v) > (uint64_t)INT64_MAX;
}

static bool type_ok(enum arg_type t, json_object *v)
{
	switch (t) {
	case ARG_STRING:
		return json_object_is_type(v, json_type_string);
	case ARG_UINT:
		return is_uint(v);
	case ARG_FLAG:
		return json_object_is_type(v, json_type_boolean);
	case ARG_RANGES:
		if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0)
			return false;
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			json_object *pair = json_object_array_get_idx(v, i);

			if (!json_object_is_type(pair, json_type_array) || json_object_array_length(pair) != 2 ||
			    !is_uint(json_object_array_get_idx(pair, 0)) ||
			    !is_uint(json_object_array_get_idx(pair, 1)))
				return false;
		}
		return true;
	case ARG_STRINGS:
		if (!json_object_is_type(v, json_type_array))
			return false;
		for (size_t i = 0; i < json_object_array_length(v); i++)
			if (!json_object_is_type(json_object_array_get_idx(v, i), json_type_string))
				return false;
		return true;
	}
	return false;
}

int wire_check_args(const struct command_def *def, json_object *args, char *err, size_t errlen)
{
	if (args && !json_object_is_type(args, json_type_object)) {
		snprintf(err, errlen, "%s: args must be an object", def->name);
		return -EINVAL;
	}
	if (args) {
		json_object_object_foreach(args, key, val) {
			const struct arg_def *a = NULL;

			for (size_t i = 0; i < MAX_ARGS && def->args[i].long_opt; i++)
				if (strcmp(def->args[i].long_opt, key) == 0)
					a = &def->args[i];
			if (!a || a->cli_only) {
				snprintf(err, errlen, "%s: unknown argument '%s'", def->name, key);
				return -EINVAL;
			}
			if (!type_ok(a->type, val)) {
				snprintf(err, errlen, "%s: argument '%s' must be %s", def->name, key, type_name(a->type));
				return -EINVAL;
			}
		}
	}
	for (size_t i = 0; i < MAX_ARGS && def->args[i].long_opt; i++) {
		json_object *v;

		if (def->args[i].required && !def->args[i].cli_only && !(args && json_object_object_get_ex(args, def->args[i].long_opt, &v))) {
			snprintf(err, errlen, "%s: missing argument '%s'", def->name, def->args[i].long_opt);
			return -EINVAL;
		}
	}
	return 0;
}

void line_reader_init(struct line_reader *lr, int fd)
{
	memset(lr, 0, sizeof(*lr));
	lr->fd = fd;
}

void line_reader_free(struct line_reader *lr)
{
	free(lr->buf);
	memset(lr, 0, sizeof(*lr));
	lr->fd = -1;
}

int line_reader_next(struct line_reader *lr, char **line, size_t *len)
{
	size_t scanned = 0;
	bool skipping = false;

	/* The line handed out last time is consumed now. */
	if (lr->consumed) {
		memmove(lr->buf, lr->buf + lr->consumed, lr->len - lr->consumed);
		lr->len -= lr->consumed;
		lr->consumed = 0;
	}
	for (;;) {
		char *nl = lr->len > scanned ? memchr(lr->buf + scanned, '\n', lr->len - scanned) : NULL;
		ssize_t r;

		if (nl) {
			size_t n = (size_t)(nl - lr->buf);

			if (skipping) {
				memmove(lr->buf, nl + 1, lr->len - n - 1);
				lr->len -= n + 1;
				return -EMSGSIZE;
			}
			*nl = '\0';
			*line = lr->buf;
			*len = n;
			lr->consumed = n + 1;
			return 1;
		}
		scanned = lr->len;
		if (lr->len >= WIRE_MAX_MESSAGE) {
			/* Keep reading to the end of the line, without keeping it. */
			skipping = true;
			lr->len = 0;
			scanned = 0;
		}
		if (lr->cap - lr->len < 65536) {
			size_t ncap = lr->cap ? lr->cap * 2 : 65536 * 2;
			char *nb;

			if (ncap > WIRE_MAX_MESSAGE + 65536)
				ncap = WIRE_MAX_MESSAGE + 65536;
			nb = realloc(lr->buf, ncap);
			if (!nb)
				return -ENOMEM;
			lr->buf = nb;
			lr->cap = ncap;
		}
		r = io_read_some(lr->fd, lr->buf + lr->len, lr->cap - lr->len);
		if (r < 0)
			return (int)r;
		if (r == 0)
			return skipping ? -EMSGSIZE : 0;
		lr->len += (size_t)r;
	}
}

int wire_send(int fd, json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	char *line = malloc(len + 1);
	int r;

	if (!line)
		return -ENOMEM;
	memcpy(line, s, len);
	line[len] = '\n';
	r = io_send_all(fd, line, len + 1);
	free(line);
	return r;
}
