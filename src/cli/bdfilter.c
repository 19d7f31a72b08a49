/* bdfilter: the command-line client of bdfilterd's control socket.
 * argv -> one JSON request (options from the commands table) -> the response
 * printed as blksnap's key=value lines, or as JSON with --json. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/base64.h"
#include "control/client.h"
#include "control/commands.h"
#include "control/wire.h"

#define READCBTMAP_CHUNK (1u << 20)

static const char *prog = "bdfilter";

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--control PATH] [--json] COMMAND [OPTION]...\n"
		"       %s COMMAND --help\n"
		"Talk to bdfilterd over its control socket (--control, $BDFILTER_CONTROL, or\n"
		"%s). Output is key=value lines, or JSON with --json.\n\nCommands:\n",
		prog, prog, WIRE_DEFAULT_SOCKET);
	for (size_t i = 0; i < CMD_COUNT; i++)
		fprintf(f, "  %-22s %s\n", command_table[i].name, command_table[i].summary);
}

static void command_usage(FILE *f, const struct command_def *def)
{
	fprintf(f, "Usage: %s %s", prog, def->name);
	for (size_t i = 0; i < MAX_ARGS && def->args[i].long_opt; i++) {
		const struct arg_def *a = &def->args[i];
		const char *open = a->required ? "" : "[", *close = a->required ? "" : "]";

		if (a->type == ARG_FLAG)
			fprintf(f, " %s--%s%s", open, a->long_opt, close);
		else
			fprintf(f, " %s-%c %s%s%s", open, a->short_opt, a->meta,
				a->type == ARG_RANGES ? "..." : "", close);
	}
	fprintf(f, " [--json]\n%s\n", def->summary);
	for (size_t i = 0; i < MAX_ARGS && def->args[i].long_opt; i++) {
		const struct arg_def *a = &def->args[i];
		char left[64];

		snprintf(left, sizeof(left), "-%c, --%s%s%s", a->short_opt, a->long_opt,
			 a->meta && a->type != ARG_FLAG ? " " : "", a->meta && a->type != ARG_FLAG ? a->meta : "");
		fprintf(f, "  %-28s %s\n", left, a->help);
	}
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	if (!*s || *s == '-')
		return -1;
	*out = strtoull(s, &end, 0);
	return errno || *end ? -1 : 0;
}

/* A number with an optional K, M, G or T (binary) suffix. */
static int parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGT";
	char *end;
	const char *u;
	unsigned shift;

	errno = 0;
	if (!*s || *s == '-')
		return -1;
	*out = strtoull(s, &end, 0);
	if (errno)
		return -1;
	if (!*end)
		return 0;
	u = strchr(units, *end & ~0x20);
	if (!u || end[1] != '\0')
		return -1;
	shift = 10 * (unsigned)(u - units + 1);
	if (*out > (UINT64_MAX >> shift))
		return -1;
	*out <<= shift;
	return 0;
}

static int add_range(json_object *ranges, const char *s)
{
	const char *colon = strchr(s, ':');
	char ofs[32];
	uint64_t o, c;
	json_object *pair;

	if (!colon || (size_t)(colon - s) >= sizeof(ofs))
		return -1;
	memcpy(ofs, s, (size_t)(colon - s));
	ofs[colon - s] = '\0';
	if (parse_u64(ofs, &o) < 0 || parse_u64(colon + 1, &c) < 0)
		return -1;
	pair = json_object_new_array();
	json_object_array_add(pair, json_object_new_uint64(o));
	json_object_array_add(pair, json_object_new_uint64(c));
	json_object_array_add(ranges, pair);
	return 0;
}

/* argv (after the command name) -> args object. -1 after printing why. */
static int build_args(const struct command_def *def, int argc, char **argv, json_object *args, bool *json,
		      const char **file)
{
	struct option lopts[MAX_ARGS + 3];
	char sopts[3 * MAX_ARGS + 4] = ":";
	json_object *ranges = NULL;
	size_t n = 0;
	int c;

	for (size_t i = 0; i < MAX_ARGS && def->args[i].long_opt; i++, n++) {
		const struct arg_def *a = &def->args[i];

		lopts[n] = (struct option){ a->long_opt, a->type == ARG_FLAG ? no_argument : required_argument,
					    NULL, a->short_opt };
		size_t sl = strlen(sopts);

		sopts[sl++] = a->short_opt;
		if (a->type != ARG_FLAG)
			sopts[sl++] = ':';
		sopts[sl] = '\0';
	}
	lopts[n++] = (struct option){ "json", no_argument, NULL, 'J' };
	lopts[n++] = (struct option){ "help", no_argument, NULL, 'h' };
	lopts[n] = (struct option){ 0 };
	strcat(sopts, "h");

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, sopts, lopts, NULL)) != -1) {
		const struct arg_def *a = NULL;
		uint64_t v;

		if (c == 'J') {
			*json = true;
			continue;
		}
		if (c == 'h') {
			command_usage(stdout, def);
			exit(0);
		}
		if (c == ':' || c == '?') {
			fprintf(stderr, "%s: %s: %s '%s' (see %s %s --help)\n", prog, def->name,
				c == ':' ? "option needs a value:" : "unknown option", argv[optind - 1], prog, def->name);
			return -1;
		}
		for (size_t i = 0; i < MAX_ARGS && def->args[i].long_opt; i++)
			if (def->args[i].short_opt == c)
				a = &def->args[i];
		switch (a->type) {
		case ARG_STRING:
			if (a->cli_only) {
				*file = optarg;
			} else if (strcmp(a->meta, "PATH") == 0 && optarg[0] != '/') {
				/* The daemon opens it, from its own working directory
				 * (/ once it has daemonized): a path relative to ours
				 * would name another file, or none. */
				char cwd[PATH_MAX], *abs;

				if (!getcwd(cwd, sizeof(cwd)) || asprintf(&abs, "%s/%s", cwd, optarg) < 0) {
					fprintf(stderr, "%s: %s: cannot make '%s' absolute: %s\n", prog, def->name,
						optarg, strerror(errno));
					return -1;
				}
				json_object_object_add(args, a->long_opt, json_object_new_string(abs));
				free(abs);
			} else {
				json_object_object_add(args, a->long_opt, json_object_new_string(optarg));
			}
			break;
		case ARG_FLAG:
			json_object_object_add(args, a->long_opt, json_object_new_boolean(1));
			break;
		case ARG_STRINGS: {
			json_object *arr;

			if (!json_object_object_get_ex(args, a->long_opt, &arr)) {
				arr = json_object_new_array();
				json_object_object_add(args, a->long_opt, arr);
			}
			json_object_array_add(arr, json_object_new_string(optarg));
			break;
		}
		case ARG_UINT:
			if (parse_size(optarg, &v) < 0) {
				fprintf(stderr, "%s: %s: --%s '%s': expected an unsigned number\n", prog, def->name,
					a->long_opt, optarg);
				return -1;
			}
			json_object_object_add(args, a->long_opt, json_object_new_uint64(v));
			break;
		case ARG_RANGES:
			if (!ranges) {
				ranges = json_object_new_array();
				json_object_object_add(args, a->long_opt, ranges);
			}
			if (add_range(ranges, optarg) < 0) {
				fprintf(stderr, "%s: %s: --%s '%s': expected OFFSET:COUNT in sectors\n", prog,
					def->name, a->long_opt, optarg);
				return -1;
			}
			break;
		}
	}
	/* blksnap's tool takes "-r OFS:CNT OFS:CNT ...": more ranges after -r */
	for (; optind < argc; optind++) {
		if (!ranges || add_range(ranges, argv[optind]) < 0) {
			fprintf(stderr, "%s: %s: unexpected argument '%s'\n", prog, def->name, argv[optind]);
			return -1;
		}
	}
	for (size_t i = 0; i < MAX_ARGS && def->args[i].long_opt; i++) {
		const struct arg_def *a = &def->args[i];
		json_object *v;

		if (a->required && !json_object_object_get_ex(args, a->long_opt, &v) && !(a->cli_only && *file)) {
			fprintf(stderr, "%s: %s: missing -%c %s (see %s %s --help)\n", prog, def->name, a->short_opt,
				a->meta ? a->meta : "", prog, def->name);
			return -1;
		}
	}
	return 0;
}

/* Send one request, read one response. The response, or NULL after printing why. */
static json_object *call(struct control_client *cc, const char *cmd, json_object *args)
{
	json_object *resp;
	char err[256];

	if (control_call(cc, cmd, args, &resp, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, cmd, err);
		return NULL;
	}
	return resp;
}

static void print_scalar(const char *key, json_object *v)
{
	if (json_object_is_type(v, json_type_boolean))
		printf("%s=%s\n", key, json_object_get_boolean(v) ? "true" : "false");
	else
		printf("%s=%s\n", key, json_object_get_string(v));
}

/* blksnap's tool prints one key=value per line; arrays repeat the key, and
 * arrays of objects print each object with a blank line between them. */
static void print_kv(json_object *o)
{
	json_object_object_foreach(o, key, val) {
		if (json_object_is_type(val, json_type_array)) {
			for (size_t i = 0; i < json_object_array_length(val); i++) {
				json_object *e = json_object_array_get_idx(val, i);

				if (json_object_is_type(e, json_type_object)) {
					if (i > 0)
						printf("\n");
					print_kv(e);
				} else if (json_object_is_type(e, json_type_array)) {
					printf("%s=%s\n", key, json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
				} else {
					print_scalar(key, e);
				}
			}
		} else if (json_object_is_type(val, json_type_object)) {
			print_kv(val);
		} else {
			print_scalar(key, val);
		}
	}
}

/* readcbtmap: fetch the map in pieces and write it to FILE. */
static int readcbtmap(struct control_client *cc, json_object *args, const char *file, bool json)
{
	int out = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	uint64_t offset = 0, total = 0, limit = UINT64_MAX;
	json_object *v;
	int rc = 1;

	/* -o/-l pick a part of the map; by default all of it. */
	if (json_object_object_get_ex(args, "offset", &v))
		offset = json_object_get_uint64(v);
	if (json_object_object_get_ex(args, "length", &v))
		limit = json_object_get_uint64(v);

	if (out < 0) {
		fprintf(stderr, "%s: readcbtmap: %s: %s\n", prog, file, strerror(errno));
		return 1;
	}
	for (;;) {
		json_object *resp, *ok, *res, *data;
		uint8_t *buf;
		size_t n;

		uint64_t want = limit - total < READCBTMAP_CHUNK ? limit - total : READCBTMAP_CHUNK;

		if (want == 0)
			break;
		json_object_object_add(args, "offset", json_object_new_uint64(offset));
		json_object_object_add(args, "length", json_object_new_uint64(want));
		resp = call(cc, "readcbtmap", args);
		if (!resp)
			goto out;
		json_object_object_get_ex(resp, "ok", &ok);
		if (!json_object_get_boolean(ok)) {
			json_object *e, *m;

			json_object_object_get_ex(resp, "errno", &e);
			json_object_object_get_ex(resp, "message", &m);
			fprintf(stderr, "%s: readcbtmap: %s: %s\n", prog, json_object_get_string(e), json_object_get_string(m));
			json_object_put(resp);
			goto out;
		}
		json_object_object_get_ex(resp, "result", &res);
		json_object_object_get_ex(res, "data", &data);
		if (base64_decode(json_object_get_string(data), (size_t)json_object_get_string_len(data), &buf, &n) < 0) {
			fprintf(stderr, "%s: readcbtmap: malformed map data from the daemon\n", prog);
			json_object_put(resp);
			goto out;
		}
		json_object_put(resp);
		if (n && write(out, buf, n) != (ssize_t)n) {
			fprintf(stderr, "%s: readcbtmap: %s: %s\n", prog, file, strerror(errno));
			free(buf);
			goto out;
		}
		free(buf);
		total += n;
		offset += n;
		if (n < want)
			break;
	}
	if (json)
		printf("{\"file\":\"%s\",\"bytes\":%" PRIu64 "}\n", file, total);
	else
		printf("file=%s\nbytes=%" PRIu64 "\n", file, total);
	rc = 0;
out:
	if (close(out) < 0 && rc == 0) {
		fprintf(stderr, "%s: readcbtmap: %s: %s\n", prog, file, strerror(errno));
		rc = 1;
	}
	return rc;
}

/* snapshot_watcher: snapshot_waitevent in a loop, until the snapshot is gone. */
static int watcher(struct control_client *cc, json_object *args, bool json)
{
	json_object_object_add(args, "timeout", json_object_new_uint64(1000));
	for (;;) {
		json_object *resp = call(cc, "snapshot_waitevent", args), *ok, *res, *e;

		if (!resp)
			return 1;
		json_object_object_get_ex(resp, "ok", &ok);
		if (!json_object_get_boolean(ok)) {
			json_object_object_get_ex(resp, "errno", &e);
			if (strcmp(json_object_get_string(e), "ESRCH") == 0) {
				json_object_put(resp);
				return 0; /* destroyed: the watch is over */
			}
			fprintf(stderr, "%s: snapshot_watcher: %s\n", prog, json_object_get_string(e));
			json_object_put(resp);
			return 1;
		}
		json_object_object_get_ex(resp, "result", &res);
		json_object_object_get_ex(res, "result", &e);
		if (strcmp(json_object_get_string(e), "timeout") != 0) {
			if (json)
				printf("%s\n", json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN));
			else {
				print_kv(res);
				printf("\n");
			}
			fflush(stdout);
		}
		json_object_put(resp);
	}
}

int main(int argc, char **argv)
{
	const char *control = control_default_path(), *file = NULL;
	const struct command_def *def;
	json_object *args, *resp, *ok;
	struct control_client cc;
	char err[512];
	bool json = false;
	int i, rc = 1;

	/* Global options come before the command. */
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if ((strcmp(argv[i], "--control") == 0 || strcmp(argv[i], "-c") == 0) && i + 1 < argc) {
			control = argv[++i];
		} else if (strncmp(argv[i], "--control=", 10) == 0) {
			control = argv[i] + 10;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("bdfilter %s\n", BDF_VERSION);
			return 0;
		} else {
			fprintf(stderr, "%s: unknown option '%s' (see %s --help)\n", prog, argv[i], prog);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[i], "help") == 0) {
		usage(stdout);
		return 0;
	}
	def = command_find(argv[i]);
	if (!def) {
		fprintf(stderr, "%s: unknown command '%s' (see %s --help)\n", prog, argv[i], prog);
		return 2;
	}
	args = json_object_new_object();
	if (build_args(def, argc - i, argv + i, args, &json, &file) < 0) {
		json_object_put(args);
		return 2;
	}

	if (control_open(&cc, control, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		json_object_put(args);
		return 1;
	}
	if (def->id == CMD_READCBTMAP) {
		rc = readcbtmap(&cc, args, file, json);
		goto out;
	}
	if (def->cli_loop) {
		rc = watcher(&cc, args, json);
		goto out;
	}
	resp = call(&cc, def->name, args);
	if (!resp)
		goto out;
	json_object_object_get_ex(resp, "ok", &ok);
	if (json_object_get_boolean(ok)) {
		json_object *res = NULL;

		json_object_object_get_ex(resp, "result", &res);
		if (json)
			printf("%s\n", json_object_to_json_string_ext(res, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
		else
			print_kv(res);
		rc = 0;
	} else {
		json_object *e = NULL, *m = NULL;

		json_object_object_get_ex(resp, "errno", &e);
		json_object_object_get_ex(resp, "message", &m);
		if (json)
			printf("%s\n", json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
		fprintf(stderr, "%s: %s: %s: %s\n", prog, def->name, e ? json_object_get_string(e) : "?",
			m ? json_object_get_string(m) : "");
	}
	json_object_put(resp);
out:
	control_close(&cc);
	json_object_put(args);
	return rc;
}
