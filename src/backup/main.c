/* bdfilter-backup: the command line. Parses a command and its options, runs
 * it, and prints its summary as key=value lines or, with --json, as one JSON
 * object (serve and mount print one line once they are ready, and run until
 * stopped). Exit status: 0 done, 1 failed (one line on stderr says why;
 * verify and list also when they find damage), 2 a usage error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "backup/backup.h"
#include "backup/prune.h"
#include "backup/repo.h"
#include "backup/run.h"
#include "backup/source.h"
#include "backup/store.h"
#include "control/client.h"
#include "core/device.h"
#include "nbd/nbd_listen.h"

#define MAX_CONNECTIONS 64

struct command {
	const char *name, *args, *help;
};

static const struct command commands[] = {
	{ "full", "--from URI --repo REPO [--device NAME] [--connections N] [--block-size BYTES]\n"
		  "       [--compress-level N] [--key-file FILE] [--repo-version 1|2]",
	  "back up every allocated block of the export into a new backup" },
	{ "incremental", "--from URI --repo REPO [--device NAME] [--bitmap CONTEXT] [--connections N] [--key-file FILE]",
	  "back up the blocks changed since the device's last backup" },
	{ "restore", "--repo REPO [--at N|--device NAME] --to FILE|DEVICE|URI [--writers N] [--key-file FILE]\n"
		     "       [--tls-creds DIR|--tls-psk FILE]",
	  "write the image as it was at backup N (default: the last, or DEVICE's last)" },
	{ "verify", "--repo REPO [--deep] [--key-file FILE]",
	  "check that every backup can be restored (--deep: read and check every chunk)" },
	{ "list", "--repo REPO [--key-file FILE]", "list the backups" },
	{ "info", "--repo REPO [--key-file FILE]", "sizes before and after dedup and compression" },
	{ "prune", "--repo REPO [--keep-last N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N]\n"
		   "       [--device NAME] [--dry-run] [--key-file FILE]",
	  "remove the backups the policy does not keep, and what only they used" },
	{ "run", "--device NAME|--all --repo REPO [--control PATH] [--storage DIR|FILE] [--limit SIZE]\n"
		 "       [--connections N] [--key-file FILE] [--block-size BYTES] [--compress-level N]\n"
		 "       [--tls-creds DIR|--tls-psk FILE] [--keep-last N] [--keep-daily N] ...",
	  "snapshot bdfilterd devices, back them up, destroy the snapshot, prune" },
	{ "serve", "--repo REPO [--at N|--device NAME] --listen unix:PATH|tcp:HOST:PORT [--export NAME]\n"
		   "       [--tls-creds DIR|--tls-psk FILE] [--key-file FILE]",
	  "serve the image at backup N as a read-only NBD export, until SIGTERM" },
	{ "mount", "--repo REPO [--at N|--device NAME] [--export NAME] [--key-file FILE] MOUNTPOINT",
	  "show the image at backup N as a read-only file MOUNTPOINT/disk.img (FUSE)" },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: bdfilter-backup COMMAND [OPTION]... [--json] [--quiet]\n"
		   "       bdfilter-backup COMMAND --help\n"
		   "Full and incremental backups of NBD exports that offer a dirty bitmap\n"
		   "(bdfilterd snapshot images, qemu-nbd -B, qemu-storage-daemon), restore and\n"
		   "verify; a backup served as a read-only NBD export or FUSE file in place\n"
		   "(instant restore). See bdfilter-backup(1).\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const char *h = commands[i].help, *nl;

		/* A help of several lines: the others under the first. */
		fprintf(f, "  %-12s ", commands[i].name);
		while ((nl = strchr(h, '\n'))) {
			fprintf(f, "%.*s\n  %-12s ", (int)(nl - h), h, "");
			h = nl + 1;
		}
		fprintf(f, "%s\n", h);
	}
	fprintf(f, "\nOptions:\n"
		   "  --from URI          the NBD export to back up (nbd://, nbd+unix:///NAME?socket=PATH,\n"
		   "                      and over TLS nbds://, nbds+unix://)\n"
		   "  --tls-creds DIR     X.509 files for nbds:// URIs: DIR/ca-cert.pem,\n"
		   "                      DIR/client-cert.pem, DIR/client-key.pem (QEMU's layout)\n"
		   "  --tls-psk FILE      a pre-shared key for nbds:// URIs (psktool's format)\n"
		   "  --tls-username NAME the PSK identity (default: the URI's user, else the\n"
		   "                      file's first identity)\n"
		   "  --repo REPO         the repository: a directory, or s3://BUCKET/PREFIX (made by\n"
		   "                      the first full backup)\n"
		   "  --device NAME       the name a device's backups go under (default: the export's\n"
		   "                      name, without bdfilterd's -image); run: the bdfilterd\n"
		   "                      device to back up (the tracker is attached if it has none;\n"
		   "                      that backup is then full); restore, serve, mount: without\n"
		   "                      --at, this device's last backup\n"
		   "  --key-file FILE     the key of an encrypted repository; a new repository made\n"
		   "                      with one is encrypted (AES-256-GCM)\n"
		   "  --compress-level N  zstd level of a new repository (0: none; default 3)\n"
		   "  --repo-version V    the format of a new repository: 2 (default) or 1\n"
		   "  --deep              verify: fetch, decrypt and check every chunk\n"
		   "  --writers N         restore: threads that fetch and write at once (1-16; default 4)\n"
		   "  --keep-last N       prune: keep each device's N newest backups\n"
		   "  --keep-daily N      prune: and the newest of each of the N latest days (UTC)\n"
		   "  --keep-weekly N     prune: ... of the N latest ISO weeks\n"
		   "  --keep-monthly N    prune: ... of the N latest months\n"
		   "  --dry-run           prune: say what would be removed, remove nothing\n"
		   "  --all               run: every device with the tracker, one snapshot for all\n"
		   "  --control PATH      run: bdfilterd's control socket (default: $BDFILTER_CONTROL,\n"
		   "                      else " WIRE_DEFAULT_SOCKET ")\n"
		   "  --storage DIR|FILE  run: the snapshot's difference storage, grown as needed: a\n"
		   "                      file, or an unlinked file in DIR (default " RUN_STORAGE_DEFAULT ")\n"
		   "  --limit SIZE        run: how far the storage may grow (K, M, G, T; default:\n"
		   "                      the devices' sizes added up)\n"
		   "  --bitmap CONTEXT    the dirty bitmap to read (NAME or qemu:dirty-bitmap:NAME);\n"
		   "                      from bdfilterd it is found from the chain's last backup\n"
		   "  --connections N     NBD connections that read at once (1-%d; default: the\n"
		   "                      number of CPUs, at most 4)\n"
		   "  --block-size BYTES  the repository's block, for a new one (default 65536;\n"
		   "                      K and M suffixes)\n"
		   "  --at N              the backup to restore, serve or mount (default: the last)\n"
		   "  --to TARGET         a file (made the image's size), a block device or an\n"
		   "                      NBD URI, at least as large as the image\n"
		   "  --listen ADDR       serve: unix:PATH, or tcp:HOST:PORT (tcp:PORT: 127.0.0.1);\n"
		   "                      beyond this machine TLS is required: --tls-creds DIR\n"
		   "                      (DIR/server-cert.pem, DIR/server-key.pem) or --tls-psk FILE\n"
		   "  --export NAME       serve: the export's name (default backup-N; the default\n"
		   "                      export \"\" works too); mount: the file's (default disk.img)\n"
		   "  --json              print the summary as one JSON object\n"
		   "  --quiet             no progress bar (there is none unless stderr is a terminal)\n"
		   "  -h, --help          this help;  -V, --version  the version\n",
		MAX_CONNECTIONS);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("bdfilter-backup: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see bdfilter-backup --help)\n", stderr);
	return 2;
}

static bool parse_u64(const char *s, uint64_t *out, bool suffixes)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	if (suffixes && (*end == 'K' || *end == 'k') && !end[1] && v <= UINT64_MAX >> 10) {
		v <<= 10;
		end++;
	} else if (suffixes && (*end == 'M' || *end == 'm') && !end[1] && v <= UINT64_MAX >> 20) {
		v <<= 20;
		end++;
	} else if (suffixes && (*end == 'G' || *end == 'g') && !end[1] && v <= UINT64_MAX >> 30) {
		v <<= 30;
		end++;
	} else if (suffixes && (*end == 'T' || *end == 't') && !end[1] && v <= UINT64_MAX >> 40) {
		v <<= 40;
		end++;
	}
	if (*end)
		return false;
	*out = v;
	return true;
}

/* ---- output ---- */

static void print_value(struct json_object *v)
{
	if (!v)
		return;
	if (json_object_is_type(v, json_type_string))
		fputs(json_object_get_string(v), stdout);
	else
		fputs(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), stdout);
}

/* key=value lines; an array of strings as one KEY-without-s= line each; an
 * array of objects as one line each of space-separated key=value. */
static void print_kv(struct json_object *o)
{
	json_object_object_foreach(o, key, val) {
		if (json_object_is_type(val, json_type_array)) {
			size_t klen = strlen(key);

			for (size_t i = 0; i < json_object_array_length(val); i++) {
				struct json_object *e = json_object_array_get_idx(val, i);

				if (json_object_is_type(e, json_type_object)) {
					const char *sep = "";

					json_object_object_foreach(e, k2, v2) {
						printf("%s%s=", sep, k2);
						print_value(v2);
						sep = " ";
					}
				} else {
					printf("%.*s=", (int)(klen > 1 && key[klen - 1] == 's' ? klen - 1 : klen), key);
					print_value(e);
				}
				putchar('\n');
			}
			continue;
		}
		printf("%s=", key);
		print_value(val);
		putchar('\n');
	}
}

/* One line of space-separated key=value: a value with a space, a quote, a
 * backslash or an equals sign, or an empty one, in double quotes (logfmt). */
static void print_line(struct json_object *o)
{
	const char *sep = "";

	json_object_object_foreach(o, key, val) {
		const char *v = json_object_is_type(val, json_type_string)
					? json_object_get_string(val)
					: json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN);

		printf("%s%s=", sep, key);
		if (*v && !strpbrk(v, " \t\"\\=")) {
			fputs(v, stdout);
		} else {
			putchar('"');
			for (; *v; v++) {
				if (*v == '"' || *v == '\\')
					putchar('\\');
				putchar(*v);
			}
			putchar('"');
		}
		sep = " ";
	}
	putchar('\n');
}

int main(int argc, char **argv)
{
	enum { O_FROM = 256, O_REPO, O_BITMAP, O_CONN, O_BS, O_AT, O_TO, O_JSON, O_QUIET, O_TLS_CREDS, O_TLS_PSK,
	       O_TLS_USER, O_DEVICE, O_KEY, O_LEVEL, O_RVERSION, O_DEEP, O_WRITERS, O_KEEP_LAST, O_KEEP_DAILY,
	       O_KEEP_WEEKLY, O_KEEP_MONTHLY, O_DRY_RUN, O_ALL, O_CONTROL, O_STORAGE, O_LIMIT, O_LISTEN,
	       O_EXPORT };
	static const struct option opts[] = {
		{ "from", required_argument, NULL, O_FROM },
		{ "repo", required_argument, NULL, O_REPO },
		{ "bitmap", required_argument, NULL, O_BITMAP },
		{ "connections", required_argument, NULL, O_CONN },
		{ "block-size", required_argument, NULL, O_BS },
		{ "at", required_argument, NULL, O_AT },
		{ "to", required_argument, NULL, O_TO },
		{ "json", no_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "tls-creds", required_argument, NULL, O_TLS_CREDS },
		{ "tls-psk", required_argument, NULL, O_TLS_PSK },
		{ "tls-username", required_argument, NULL, O_TLS_USER },
		{ "device", required_argument, NULL, O_DEVICE },
		{ "key-file", required_argument, NULL, O_KEY },
		{ "compress-level", required_argument, NULL, O_LEVEL },
		{ "repo-version", required_argument, NULL, O_RVERSION },
		{ "deep", no_argument, NULL, O_DEEP },
		{ "writers", required_argument, NULL, O_WRITERS },
		{ "keep-last", required_argument, NULL, O_KEEP_LAST },
		{ "keep-daily", required_argument, NULL, O_KEEP_DAILY },
		{ "keep-weekly", required_argument, NULL, O_KEEP_WEEKLY },
		{ "keep-monthly", required_argument, NULL, O_KEEP_MONTHLY },
		{ "dry-run", no_argument, NULL, O_DRY_RUN },
		{ "all", no_argument, NULL, O_ALL },
		{ "control", required_argument, NULL, O_CONTROL },
		{ "storage", required_argument, NULL, O_STORAGE },
		{ "limit", required_argument, NULL, O_LIMIT },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "export", required_argument, NULL, O_EXPORT },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *cmd, *from = NULL, *repo = NULL, *bitmap = NULL, *to = NULL;
	const char *device = NULL, *control = NULL, *storage = NULL;
	bool all = false, have_limit = false;
	uint64_t limit = 0;
	const char *listen = NULL, *export_name = NULL;
	const struct command *c = NULL;
	uint64_t connections = 0, block_size = REPO_BLOCK_SIZE_DEFAULT, at = 0;
	bool json = false, quiet = false, have_at = false, have_bs = false, deep = false;
	const char *key_file = NULL;
	uint64_t level = 0, repo_version = 0, writers = 0;
	bool have_level = false, dry_run = false, have_keep = false;
	struct prune_rules keep = { 0 };
	struct json_object *result = NULL;
	struct source_tls tls = { 0 };
	int opt, r;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
		printf("bdfilter-backup %s\n", BDF_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(cmd, commands[i].name))
			c = &commands[i];
	if (!c)
		return usage_error("unknown command '%s'", cmd);
	optind = 2;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
		switch (opt) {
		case O_FROM: from = optarg; break;
		case O_REPO: repo = optarg; break;
		case O_BITMAP: bitmap = optarg; break;
		case O_TO: to = optarg; break;
		case O_JSON: json = true; break;
		case O_QUIET: quiet = true; break;
		case O_TLS_CREDS: tls.creds_dir = optarg; break;
		case O_TLS_PSK: tls.psk_file = optarg; break;
		case O_TLS_USER: tls.username = optarg; break;
		case O_DEVICE: device = optarg; break;
		case O_KEY: key_file = optarg; break;
		case O_DEEP: deep = true; break;
		case O_DRY_RUN: dry_run = true; break;
		case O_KEEP_LAST:
		case O_KEEP_DAILY:
		case O_KEEP_WEEKLY:
		case O_KEEP_MONTHLY: {
			uint64_t v;

			if (!parse_u64(optarg, &v, false) || v > 1000000)
				return usage_error("--keep-%s '%s': a number from 0 to 1000000 is needed",
						   opt == O_KEEP_LAST ? "last" : opt == O_KEEP_DAILY ? "daily" :
						   opt == O_KEEP_WEEKLY ? "weekly" : "monthly", optarg);
			*(opt == O_KEEP_LAST ? &keep.last : opt == O_KEEP_DAILY ? &keep.daily :
			  opt == O_KEEP_WEEKLY ? &keep.weekly : &keep.monthly) = (unsigned)v;
			have_keep = true;
			break;
		}
		case O_LEVEL:
			if (!parse_u64(optarg, &level, false) || level > 19)
				return usage_error("--compress-level '%s': a number from 0 to 19 is needed", optarg);
			have_level = true;
			break;
		case O_RVERSION:
			if (!parse_u64(optarg, &repo_version, false) || repo_version < 1 || repo_version > 2)
				return usage_error("--repo-version '%s': 1 or 2", optarg);
			break;
		case O_WRITERS:
			if (!parse_u64(optarg, &writers, false) || writers < 1 || writers > 16)
				return usage_error("--writers '%s': a number from 1 to 16 is needed", optarg);
			break;
		case O_ALL: all = true; break;
		case O_CONTROL: control = optarg; break;
		case O_STORAGE: storage = optarg; break;
		case O_LIMIT:
			if (!parse_u64(optarg, &limit, true) || limit == 0)
				return usage_error("--limit '%s': a size in bytes is needed (K, M, G, T suffixes)", optarg);
			have_limit = true;
			break;
		case O_LISTEN: listen = optarg; break;
		case O_EXPORT: export_name = optarg; break;
		case O_CONN:
			if (!parse_u64(optarg, &connections, false) || connections < 1 || connections > MAX_CONNECTIONS)
				return usage_error("--connections '%s': a number from 1 to 64 is needed", optarg);
			break;
		case O_BS:
			if (!parse_u64(optarg, &block_size, true) || block_size > UINT32_MAX)
				return usage_error("--block-size '%s': a size in bytes is needed", optarg);
			have_bs = true;
			break;
		case O_AT:
			if (!parse_u64(optarg, &at, false) || at > INT32_MAX)
				return usage_error("--at '%s': a backup number (0, 1, ...) is needed", optarg);
			have_at = true;
			break;
		case 'h':
			printf("Usage: bdfilter-backup %s %s%s\n%s.\n", c->name, c->args,
			       strcmp(c->name, "serve") && strcmp(c->name, "mount") ? " [--json] [--quiet]" : "",
			       c->help);
			if (!strcmp(c->name, "run"))
				printf("\nWith --device, REPO is the device's repository; with --all, a directory that\n"
				       "holds one repository per device, REPO/NAME (a repository holds one device's\n"
				       "chain). The storage is an unlinked file in DIR (default " RUN_STORAGE_DEFAULT "), or\n"
				       "FILE, grown up to --limit (default: the devices' sizes added up). Prints one\n"
				       "line per device: device, kind, reason, backup, bytes_read, bytes_stored, repo,\n"
				       "seconds; with --all a total line. SIGINT or SIGTERM stops the copy: nothing\n"
				       "is stored and the snapshot is destroyed (a second one exits at once).\n");
			return 0;
		case 'V':
			printf("bdfilter-backup %s\n", BDF_VERSION);
			return 0;
		case ':':
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	bool serve = !strcmp(cmd, "serve"), mount = !strcmp(cmd, "mount");
	const char *mountpoint = mount && optind < argc ? argv[optind++] : NULL;

	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!repo)
		return usage_error("%s needs --repo REPO", c->name);
	if (mount && !mountpoint)
		return usage_error("mount needs a MOUNTPOINT (a directory)");
	if ((have_level || repo_version) && strcmp(cmd, "full") && strcmp(cmd, "run"))
		return usage_error("%s: --compress-level and --repo-version are for the full backup that makes a "
				   "repository", c->name);
	if (device && strcmp(cmd, "full") && strcmp(cmd, "incremental") && strcmp(cmd, "prune") && strcmp(cmd, "run") &&
	    strcmp(cmd, "restore") && strcmp(cmd, "serve") && strcmp(cmd, "mount"))
		return usage_error("%s takes no --device", c->name);
	if (have_keep && strcmp(cmd, "prune") && strcmp(cmd, "run"))
		return usage_error("%s takes no --keep-*", c->name);
	if (dry_run && strcmp(cmd, "prune"))
		return usage_error("%s takes no --dry-run", c->name);
	if (deep && strcmp(cmd, "verify"))
		return usage_error("%s takes no --deep", c->name);
	if (writers && strcmp(cmd, "restore"))
		return usage_error("%s takes no --writers", c->name);
	bool backup = !strcmp(cmd, "full") || !strcmp(cmd, "incremental");
	bool run = !strcmp(cmd, "run");
	bool at_ok = !strcmp(cmd, "restore") || serve || mount;
	if (at_ok && have_at && device)
		return usage_error("%s: --at and --device: give one of them", c->name);
	if (repo_version == 1 && store_is_s3(repo))
		return usage_error("an S3 repository is version 2");
	if (backup && !from)
		return usage_error("%s needs --from URI", c->name);
	if (run && from)
		return usage_error("run takes no --from: it asks bdfilterd where its images are");
	if (!backup && !run && (from || bitmap || connections || have_bs))
		return usage_error("%s takes no --from, --bitmap, --connections or --block-size", c->name);
	if (have_bs && strcmp(cmd, "full") && !run)
		return usage_error("%s: the block size is the repository's, set by its first full backup", c->name);
	if (run && !device && !all)
		return usage_error("run needs --device NAME or --all");
	if (run && device && all)
		return usage_error("run: --device and --all: give one of them");
	if (run && device && !*device)
		return usage_error("run: --device needs a device name");
	if (!run && (all || control || storage || have_limit))
		return usage_error("%s takes no --all, --control, --storage or --limit", c->name);
	if (run && repo_version == 1)
		return usage_error("run keeps every device in one repository of version 2");
	if (bitmap && strcmp(cmd, "incremental"))
		return usage_error("%s takes no --bitmap", c->name);
	if (!strcmp(cmd, "restore") && !to)
		return usage_error("%s needs --to TARGET", c->name);
	if (strcmp(cmd, "restore") && to)
		return usage_error("%s takes no --to", c->name);
	if (!at_ok && have_at)
		return usage_error("%s takes no --at", c->name);
	if (serve && !listen)
		return usage_error("serve needs --listen unix:PATH or tcp:HOST:PORT");
	if (!serve && listen)
		return usage_error("%s takes no --listen", c->name);
	if (!serve && !mount && export_name)
		return usage_error("%s takes no --export", c->name);
	if (serve) {
		struct listen_addr a;
		char err[256];

		if (listen_addr_parse(listen, &a, err, sizeof(err)) < 0)
			return usage_error("--listen %s", err);
		listen_addr_free(&a);
		if (export_name && strlen(export_name) > 4096)
			return usage_error("--export: a name of at most 4096 bytes is needed");
	}
	if (mount && export_name && !device_name_valid(export_name))
		return usage_error("--export '%s': a file name of 1 to 255 printable bytes without ' ', ',', '=' "
				   "or '/' is needed", export_name);
	if ((serve || mount) && (json || quiet))
		return usage_error("%s takes no --json or --quiet: it prints one line once it is ready", c->name);

	if (tls.creds_dir && tls.psk_file)
		return usage_error("--tls-creds and --tls-psk: give one of them");
	if (tls.username && !tls.psk_file)
		return usage_error("--tls-username goes with --tls-psk");
	if (tls.username && serve)
		return usage_error("serve takes no --tls-username: the PSK file names its clients");
	if ((tls.creds_dir || tls.psk_file) && !backup && !run && strcmp(cmd, "restore") && !serve)
		return usage_error("%s makes no NBD connection: no --tls-creds or --tls-psk", c->name);
	if ((backup || run) && !connections) {
		/* More readers than CPUs only make them queue for the CPUs. */
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		connections = cpus < 1 ? 1 : cpus > 4 ? 4 : (uint64_t)cpus;
	}
	if (backup) {
		struct backup_opts o = {
			.uri = from, .repo = repo, .tls = &tls, .bitmap = bitmap, .connections = (unsigned)connections,
			.block_size = (uint32_t)block_size, .incremental = !strcmp(cmd, "incremental"),
			.show_progress = !quiet && !json, .device = device, .key_file = key_file,
			.level = have_level ? (int)level : -1, .repo_version = (int)repo_version,
		};
		r = backup_run(&o, &result);
	} else if (run) {
		struct run_opts o = {
			.control = control ? control : control_default_path(), .device = device, .all = all, .repo = repo,
			.storage = storage, .limit = limit, .tls = &tls, .connections = (unsigned)connections,
			.block_size = (uint32_t)block_size, .show_progress = !quiet && !json, .key_file = key_file,
			.level = have_level ? (int)level : -1, .keep = keep, .prune = have_keep,
		};
		r = run_backup(&o, &result);
	} else if (!strcmp(cmd, "restore")) {
		struct restore_opts o = {
			.repo = repo, .to = to, .tls = &tls, .at = have_at ? (int64_t)at : -1, .show_progress = !quiet && !json,
			.key_file = key_file, .writers = (unsigned)writers, .device = device,
		};
		r = restore_run(&o, &result);
	} else if (serve) {
		struct serve_opts o = {
			.repo = repo, .key_file = key_file, .at = have_at ? (int64_t)at : -1, .device = device, .listen = listen,
			.export_name = export_name, .tls_creds = tls.creds_dir, .tls_psk = tls.psk_file,
		};
		r = serve_run(&o);
	} else if (mount) {
		struct mount_opts o = {
			.repo = repo, .key_file = key_file, .at = have_at ? (int64_t)at : -1, .device = device, .dir = mountpoint,
			.name = export_name,
		};
		r = mount_run(&o);
	} else if (!strcmp(cmd, "verify")) {
		r = verify_run(repo, key_file, deep, &result);
	} else if (!strcmp(cmd, "prune")) {
		struct prune_opts po = {
			.repo = repo, .key_file = key_file, .device = device, .keep = keep, .dry_run = dry_run,
		};
		r = prune_run(&po, &result);
	} else if (!strcmp(cmd, "info")) {
		r = info_run(repo, key_file, &result);
	} else {
		r = list_run(repo, key_file, &result);
	}
	if (result && run) {
		/* One line per device (and a total), for a log. */
		for (size_t i = 0; i < json_object_array_length(result); i++) {
			struct json_object *line = json_object_array_get_idx(result, i);

			if (json)
				puts(json_object_to_json_string_ext(line, JSON_C_TO_STRING_PLAIN |
										  JSON_C_TO_STRING_NOSLASHESCAPE));
			else
				print_line(line);
		}
		json_object_put(result);
	} else if (result) {
		if (json)
			puts(json_object_to_json_string_ext(result, JSON_C_TO_STRING_PRETTY |
									    JSON_C_TO_STRING_NOSLASHESCAPE));
		else
			print_kv(result);
		json_object_put(result);
	}
	if (r == 1 && !strcmp(cmd, "verify"))
		fprintf(stderr, "bdfilter-backup: verify: %s is damaged (see the errors above)\n", repo);
	return r == 0 ? 0 : 1;
}
