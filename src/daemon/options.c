/* bdfilterd's command line: getopt_long, --help, and validation of every value,
 * so that a bad command line fails with one message before anything listens. */
#include "daemon/options.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/wire.h"
#include "core/device.h"
#include "filters/filters.h"
#include "nbd/nbd_server.h"

/* Bounds of the NBD limits: a connection's in-flight bound holds at least one
 * request of the maximum payload; more than these is a typo, not a setting. */
#define MAX_CONNECTIONS_MAX 65536u
#define INFLIGHT_MIN ((uint64_t)NBD_SERVER_MAX_PAYLOAD)
#define INFLIGHT_MAX (UINT64_C(1) << 40)

enum {
	OPT_HELP = 'h',
	OPT_VERSION = 'V',
	OPT_FOREGROUND = 'f',
	OPT_LISTEN = 'l',
	OPT_DEVICE = 'd',
	OPT_PIDFILE = 'P',
	OPT_CONTROL = 'c',
	OPT_LOG_LEVEL = 256,
	OPT_THREADS,
	OPT_HANDSHAKE_TIMEOUT,
	OPT_PARAM,
	OPT_FUSE_DIR,
	OPT_STATE_DIR,
	OPT_MAX_CONNECTIONS,
	OPT_MAX_INFLIGHT,
	OPT_MAX_INFLIGHT_CONN,
	OPT_DM_ULOG,
	OPT_DM_ULOG_LISTEN,
	OPT_TLS,
	OPT_TLS_CREDS,
	OPT_TLS_PSK,
	OPT_TLS_VERIFY_PEER,
	OPT_TLS_AUTHZ,
	OPT_CONTROL_GROUP,
};

static const struct option long_opts[] = {
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "foreground", no_argument, NULL, OPT_FOREGROUND },
	{ "nbd-listen", required_argument, NULL, OPT_LISTEN },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "pidfile", required_argument, NULL, OPT_PIDFILE },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "control-group", required_argument, NULL, OPT_CONTROL_GROUP },
	{ "param", required_argument, NULL, OPT_PARAM },
	{ "fuse-dir", required_argument, NULL, OPT_FUSE_DIR },
	{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
	{ "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
	{ "max-inflight", required_argument, NULL, OPT_MAX_INFLIGHT },
	{ "max-inflight-per-conn", required_argument, NULL, OPT_MAX_INFLIGHT_CONN },
	{ "dm-ulog", no_argument, NULL, OPT_DM_ULOG },
	{ "dm-ulog-listen", required_argument, NULL, OPT_DM_ULOG_LISTEN },
	{ "tls", required_argument, NULL, OPT_TLS },
	{ "tls-creds", required_argument, NULL, OPT_TLS_CREDS },
	{ "tls-psk", required_argument, NULL, OPT_TLS_PSK },
	{ "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY_PEER },
	{ "tls-authz", required_argument, NULL, OPT_TLS_AUTHZ },
	{ NULL, 0, NULL, 0 },
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: bdfilterd [OPTION]...\n"
		"Serve block devices through a stack of filters over NBD and as files.\n"
		"\n"
		"  -d, --device NAME=PATH[,ro][,filter=F]...\n"
		"                             serve the file or block device PATH as export NAME;\n"
		"                             ro: read-only; filter=F: attach filter F\n"
		"                             (tracker, passthrough)\n"
		"  -l, --nbd-listen ADDR      listen for NBD clients on ADDR: unix:PATH,\n"
		"                             tcp:HOST:PORT or tcp:PORT (127.0.0.1); repeatable.\n"
		"                             Without it, sockets passed by systemd (LISTEN_FDS).\n"
		"      --tls off|on|require   NBD over TLS on every listener: refused, offered,\n"
		"                             or required (nothing but STARTTLS before it).\n"
		"                             Default: off on Unix sockets and loopback,\n"
		"                             require on TCP reachable from other machines\n"
		"      --tls-creds DIR        X.509 credentials as QEMU lays them out:\n"
		"                             DIR/server-cert.pem, DIR/server-key.pem,\n"
		"                             DIR/ca-cert.pem (for --tls-verify-peer),\n"
		"                             DIR/ca-crl.pem (optional)\n"
		"      --tls-psk FILE         pre-shared keys instead, IDENTITY:HEXKEY per line\n"
		"                             (psktool's format)\n"
		"      --tls-verify-peer      ask every client for a certificate signed by\n"
		"                             DIR/ca-cert.pem; refuse those without one\n"
		"      --tls-authz NAME       accept only the client whose certificate DN (as\n"
		"                             RFC 4514 writes it, e.g. CN=backup,O=Example;\n"
		"                             implies --tls-verify-peer) or PSK identity is NAME\n"
		"      --fuse-dir DIR         mount a FUSE file system at DIR with one file per\n"
		"                             device and snapshot image, for losetup (made if\n"
		"                             missing; unmounted at exit)\n"
		"  -c, --control PATH         control socket for the bdfilter CLI (default\n"
		"                             " WIRE_DEFAULT_SOCKET "; 'none': no control socket).\n"
		"                             Root and bdfilterd's own user may use it\n"
		"      --control-group GROUP  ... and members of GROUP (a name or a numeric gid),\n"
		"                             by their primary or a supplementary group; the\n"
		"                             socket is then mode 0660, group GROUP (else 0600).\n"
		"                             A control client can do anything to the devices.\n"
		"      --state-dir DIR        keep each tracker's CBT map in DIR/NAME.cbt:\n"
		"                             saved at a clean stop, loaded at attach (DIR\n"
		"                             made if missing). Default: none, the map is in\n"
		"                             memory only, as in blksnap. While stopped, write\n"
		"                             the devices only through bdfilterd, or the saved\n"
		"                             maps miss those changes\n"
		"      --dm-ulog              serve device-mapper's userspace dirty logs on the\n"
		"                             netlink connector, as cmirrord does (mirrors made\n"
		"                             with dmsetup and the 'userspace' log type)\n"
		"      --dm-ulog-listen PATH  serve the same protocol on a Unix SOCK_SEQPACKET\n"
		"                             socket (0600): each packet a struct cn_msg and its\n"
		"                             struct dm_ulog_request. With --state-dir the live\n"
		"                             logs are remembered across a restart\n"
		"      --param NAME=VALUE     set a blksnap parameter (see bdfilter params)\n"
		"  -f, --foreground           do not daemonize; log to stderr\n"
		"  -P, --pidfile PATH         write the daemon's pid to PATH\n"
		"      --log-level LEVEL      error, warn, info (default) or debug\n"
		"      --threads N            request workers per NBD connection, and for the\n"
		"                             FUSE export (default 16)\n"
		"      --handshake-timeout S  close clients that take longer than S seconds to\n"
		"                             negotiate (default 10; 0: no limit)\n"
		"      --max-connections N    NBD connections at once (default 128, 1 to 65536);\n"
		"                             more are closed at once, and the log says so\n"
		"      --max-inflight SIZE    READ and WRITE data in memory at once, over all NBD\n"
		"                             connections (default 512M; 32M to 1T); requests\n"
		"                             over it wait\n"
		"      --max-inflight-per-conn SIZE\n"
		"                             the same for one connection: 32M (the largest\n"
		"                             request buffer) to --max-inflight (default an\n"
		"                             eighth of --max-inflight, at least 32M)\n"
		"  -h, --help                 print this help and exit\n"
		"  -V, --version              print the version and exit\n"
		"\n"
		"SIGTERM or SIGINT: stop taking requests, answer those in flight, flush, exit 0.\n"
		"A FUSE mount still in use (a loop device attached) is waited for 10 s, then\n"
		"detached: its loop devices get I/O errors from then on.\n");
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	/* A digit first: strtoul takes leading blanks and a sign ("-1" as ULONG_MAX). */
	if (errno || !isdigit((unsigned char)s[0]) || *end || v < min || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	/* strtoull would take "-1" (as 2^64 - 1) and leading blanks. */
	if (errno || !isdigit((unsigned char)s[0]))
		return -1;
	switch (*end) {
	case 'K': case 'k':
		shift = 10;
		break;
	case 'M': case 'm':
		shift = 20;
		break;
	case 'G': case 'g':
		shift = 30;
		break;
	case 'T': case 't':
		shift = 40;
		break;
	case '\0':
		break;
	default:
		return -1;
	}
	if (shift && *++end)
		return -1;
	if (v > (UINT64_MAX >> shift))
		return -1;
	v <<= shift;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

void device_spec_free(struct device_spec *d)
{
	free(d->name);
	free(d->path);
	for (size_t i = 0; i < d->n_filters; i++)
		free(d->filters[i]);
	memset(d, 0, sizeof(*d));
}

int device_spec_parse(const char *arg, struct device_spec *d, char *err, size_t errlen)
{
	const char *eq = strchr(arg, '=');
	char *rest, *tok, *save = NULL;

	memset(d, 0, sizeof(*d));
	if (!eq) {
		snprintf(err, errlen, "--device '%s': expected NAME=PATH", arg);
		return -1;
	}
	d->name = strndup(arg, (size_t)(eq - arg));
	rest = strdup(eq + 1);
	if (!d->name || !rest)
		goto nomem;
	if (!device_name_valid(d->name)) {
		snprintf(err, errlen, "--device '%s': invalid device name '%s'", arg, d->name);
		goto fail;
	}
	tok = strtok_r(rest, ",", &save);
	if (!tok) {
		snprintf(err, errlen, "--device '%s': missing PATH", arg);
		goto fail;
	}
	d->path = strdup(tok);
	if (!d->path)
		goto nomem;
	while ((tok = strtok_r(NULL, ",", &save))) {
		if (strcmp(tok, "ro") == 0) {
			d->readonly = true;
		} else if (strncmp(tok, "filter=", 7) == 0) {
			const char *f = tok + 7;

			if (!filter_lookup(f)) {
				snprintf(err, errlen, "--device '%s': unknown filter '%s'", arg, f);
				goto fail;
			}
			for (size_t i = 0; i < d->n_filters; i++)
				if (strcmp(d->filters[i], f) == 0) {
					snprintf(err, errlen, "--device '%s': filter '%s' given twice", arg, f);
					goto fail;
				}
			if (d->n_filters == MAX_DEVICE_FILTERS) {
				snprintf(err, errlen, "--device '%s': too many filters", arg);
				goto fail;
			}
			if (!(d->filters[d->n_filters++] = strdup(f)))
				goto nomem;
		} else {
			snprintf(err, errlen, "--device '%s': unknown device option '%s'", arg, tok);
			goto fail;
		}
	}
	free(rest);
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	free(rest);
	device_spec_free(d);
	return -1;
}

int parse_group(const char *s, gid_t *out, char *err, size_t errlen)
{
	struct group gr, *res = NULL;
	size_t buflen = 1024;
	char *buf = NULL;
	int r;

	if (isdigit((unsigned char)s[0])) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(s, &end, 10);
		/* (gid_t)-1 means "leave it" to chown: not a group. */
		if (errno || *end || v >= (gid_t)-1) {
			snprintf(err, errlen, "--control-group '%s': expected a group name or a gid below %u", s,
				 (unsigned)(gid_t)-1);
			return -1;
		}
		*out = (gid_t)v;
		return 0;
	}
	if (!*s) {
		snprintf(err, errlen, "--control-group: expected a group name or a gid");
		return -1;
	}
	do {
		char *nb;

		buflen *= 2;
		nb = realloc(buf, buflen);
		if (!nb) {
			free(buf);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		buf = nb;
		r = getgrnam_r(s, &gr, buf, buflen, &res);
	} while (r == ERANGE && buflen < (1u << 20));
	if (r == 0 && res)
		*out = res->gr_gid;
	free(buf);
	if (r != 0) {
		snprintf(err, errlen, "--control-group '%s': cannot look the group up: %s", s, strerror(r));
		return -1;
	}
	if (!res) {
		snprintf(err, errlen, "--control-group '%s': no such group", s);
		return -1;
	}
	return 0;
}

static int push(void **v, size_t *n, size_t size, const void *item)
{
	void *nv = realloc(*v, (*n + 1) * size);

	if (!nv)
		return -1;
	memcpy((char *)nv + *n * size, item, size);
	*v = nv;
	(*n)++;
	return 0;
}

int options_parse(int argc, char **argv, struct options *o)
{
	char err[512];
	int c;

	memset(o, 0, sizeof(*o));
	o->log_level = LOG_LEVEL_INFO;
	o->threads = 16;
	o->handshake_timeout_s = 10;
	o->max_connections = NBD_DEFAULT_MAX_CONNECTIONS;
	o->max_inflight = NBD_DEFAULT_MAX_INFLIGHT;
	o->control = strdup(WIRE_DEFAULT_SOCKET);
	params_defaults(&o->params);
	opterr = 0;
	optind = 1;

	while ((c = getopt_long(argc, argv, ":hVfl:d:P:c:", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_HELP:
			usage(stdout);
			return 1;
		case OPT_VERSION:
			printf("bdfilterd %s\n", BDF_VERSION);
			return 1;
		case OPT_FOREGROUND:
			o->foreground = true;
			break;
		case OPT_LISTEN: {
			char *s = strdup(optarg);

			if (!s || push((void **)&o->listen, &o->n_listen, sizeof(s), &s) < 0) {
				free(s);
				fprintf(stderr, "bdfilterd: out of memory\n");
				return -1;
			}
			break;
		}
		case OPT_DEVICE: {
			struct device_spec d;

			if (device_spec_parse(optarg, &d, err, sizeof(err)) < 0) {
				fprintf(stderr, "bdfilterd: %s\n", err);
				return -1;
			}
			for (size_t i = 0; i < o->n_devices; i++)
				if (strcmp(o->devices[i].name, d.name) == 0) {
					fprintf(stderr, "bdfilterd: --device: device name '%s' is used twice\n", d.name);
					device_spec_free(&d);
					return -1;
				}
			if (push((void **)&o->devices, &o->n_devices, sizeof(d), &d) < 0) {
				device_spec_free(&d);
				fprintf(stderr, "bdfilterd: out of memory\n");
				return -1;
			}
			break;
		}
		case OPT_PIDFILE:
			free(o->pidfile);
			o->pidfile = strdup(optarg);
			break;
		case OPT_LOG_LEVEL:
			if (log_parse_level(optarg, &o->log_level) < 0) {
				fprintf(stderr, "bdfilterd: --log-level '%s': expected error, warn, info or debug\n",
					optarg);
				return -1;
			}
			break;
		case OPT_THREADS:
			if (parse_uint(optarg, 1, 1024, &o->threads) < 0) {
				fprintf(stderr, "bdfilterd: --threads '%s': expected a number from 1 to 1024\n", optarg);
				return -1;
			}
			break;
		case OPT_HANDSHAKE_TIMEOUT:
			if (parse_uint(optarg, 0, 86400, &o->handshake_timeout_s) < 0) {
				fprintf(stderr, "bdfilterd: --handshake-timeout '%s': expected seconds (0 to 86400)\n",
					optarg);
				return -1;
			}
			break;
		case OPT_MAX_CONNECTIONS:
			if (parse_uint(optarg, 1, MAX_CONNECTIONS_MAX, &o->max_connections) < 0) {
				fprintf(stderr, "bdfilterd: --max-connections '%s': expected a number from 1 to %u\n",
					optarg, MAX_CONNECTIONS_MAX);
				return -1;
			}
			break;
		case OPT_MAX_INFLIGHT:
		case OPT_MAX_INFLIGHT_CONN:
			if (parse_size(optarg, INFLIGHT_MIN, INFLIGHT_MAX,
				       c == OPT_MAX_INFLIGHT ? &o->max_inflight : &o->max_inflight_conn) < 0) {
				fprintf(stderr, "bdfilterd: --%s '%s': expected a size from 32M to 1T "
					"(bytes, or a number with K, M, G or T)\n",
					c == OPT_MAX_INFLIGHT ? "max-inflight" : "max-inflight-per-conn", optarg);
				return -1;
			}
			break;
		case OPT_CONTROL:
			free(o->control);
			o->control = strcmp(optarg, "none") == 0 ? NULL : strdup(optarg);
			break;
		case OPT_CONTROL_GROUP:
			if (parse_group(optarg, &o->control_gid, err, sizeof(err)) < 0) {
				fprintf(stderr, "bdfilterd: %s\n", err);
				return -1;
			}
			free(o->control_group);
			o->control_group = strdup(optarg);
			break;
		case OPT_FUSE_DIR:
			if (!*optarg) {
				fprintf(stderr, "bdfilterd: --fuse-dir: expected a directory\n");
				return -1;
			}
			free(o->fuse_dir);
			o->fuse_dir = strdup(optarg);
			break;
		case OPT_DM_ULOG:
			o->dm_ulog = true;
			break;
		case OPT_DM_ULOG_LISTEN:
			if (!*optarg) {
				fprintf(stderr, "bdfilterd: --dm-ulog-listen: expected a socket path\n");
				return -1;
			}
			free(o->dm_ulog_listen);
			o->dm_ulog_listen = strdup(optarg);
			break;
		case OPT_TLS:
			if (nbd_tls_mode_parse(optarg, &o->tls_mode) < 0) {
				fprintf(stderr, "bdfilterd: --tls '%s': expected off, on or require\n", optarg);
				return -1;
			}
			o->tls_mode_set = true;
			break;
		case OPT_TLS_CREDS:
		case OPT_TLS_PSK:
		case OPT_TLS_AUTHZ: {
			char **dst = c == OPT_TLS_CREDS ? &o->tls_creds : c == OPT_TLS_PSK ? &o->tls_psk : &o->tls_authz;

			if (!*optarg) {
				fprintf(stderr, "bdfilterd: %s: expected a value\n", argv[optind - 1]);
				return -1;
			}
			free(*dst);
			*dst = strdup(optarg);
			break;
		}
		case OPT_TLS_VERIFY_PEER:
			o->tls_verify_peer = true;
			break;
		case OPT_STATE_DIR:
			if (!*optarg) {
				fprintf(stderr, "bdfilterd: --state-dir: expected a directory\n");
				return -1;
			}
			free(o->state_dir);
			o->state_dir = strdup(optarg);
			break;
		case OPT_PARAM: {
			char *eq = strchr(optarg, '='), *name;
			int r;

			if (!eq) {
				fprintf(stderr, "bdfilterd: --param '%s': expected NAME=VALUE\n", optarg);
				return -1;
			}
			name = strndup(optarg, (size_t)(eq - optarg));
			r = name ? params_set(&o->params, name, eq + 1, err, sizeof(err)) : -ENOMEM;
			free(name);
			if (r < 0) {
				fprintf(stderr, "bdfilterd: --param: %s\n", err);
				return -1;
			}
			break;
		}
		case ':':
			fprintf(stderr, "bdfilterd: option '%s' needs a value (see --help)\n", argv[optind - 1]);
			return -1;
		default:
			if (optopt)
				fprintf(stderr, "bdfilterd: unknown option '-%c' (see --help)\n", optopt);
			else
				fprintf(stderr, "bdfilterd: unknown option '%s' (see --help)\n", argv[optind - 1]);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "bdfilterd: unexpected argument '%s' (see --help)\n", argv[optind]);
		return -1;
	}
	if (o->max_inflight_conn == 0) {
		o->max_inflight_conn = o->max_inflight / NBD_INFLIGHT_CONN_SHARE;
		if (o->max_inflight_conn < INFLIGHT_MIN)
			o->max_inflight_conn = INFLIGHT_MIN;
	} else if (o->max_inflight_conn > o->max_inflight) {
		fprintf(stderr, "bdfilterd: --max-inflight-per-conn (%llu bytes) is over --max-inflight (%llu bytes)\n",
			(unsigned long long)o->max_inflight_conn, (unsigned long long)o->max_inflight);
		return -1;
	}
	if (o->tls_creds && o->tls_psk) {
		fprintf(stderr, "bdfilterd: --tls-creds and --tls-psk: give one of them\n");
		return -1;
	}
	if (o->tls_mode_set && o->tls_mode != NBD_TLS_OFF && !o->tls_creds && !o->tls_psk) {
		fprintf(stderr, "bdfilterd: --tls %s needs credentials: --tls-creds DIR or --tls-psk FILE\n",
			nbd_tls_mode_name(o->tls_mode));
		return -1;
	}
	if ((o->tls_verify_peer || o->tls_authz) && !o->tls_creds && !o->tls_psk) {
		fprintf(stderr, "bdfilterd: %s needs --tls-creds DIR or --tls-psk FILE\n",
			o->tls_verify_peer ? "--tls-verify-peer" : "--tls-authz");
		return -1;
	}
	if (o->control_group && !o->control) {
		fprintf(stderr, "bdfilterd: --control-group with --control none: there is no control socket\n");
		return -1;
	}
	if (o->n_devices == 0 && !o->control) {
		fprintf(stderr, "bdfilterd: no device to serve and no control socket to add one (see --help)\n");
		return -1;
	}
	return 0;
}

void options_free(struct options *o)
{
	for (size_t i = 0; i < o->n_listen; i++)
		free(o->listen[i]);
	free(o->listen);
	for (size_t i = 0; i < o->n_devices; i++)
		device_spec_free(&o->devices[i]);
	free(o->devices);
	free(o->pidfile);
	free(o->control);
	free(o->control_group);
	free(o->fuse_dir);
	free(o->state_dir);
	free(o->dm_ulog_listen);
	free(o->tls_creds);
	free(o->tls_psk);
	free(o->tls_authz);
	memset(o, 0, sizeof(*o));
}
