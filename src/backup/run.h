/* bdfilter-backup run: one command per backup of bdfilterd's devices. */
#ifndef BDF_BACKUP_RUN_H
#define BDF_BACKUP_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "backup/prune.h"

struct source_tls;

/* Where the difference storage goes when --storage is not given: an
 * unlinked file in this directory, grown as copies need it. */
#define RUN_STORAGE_DEFAULT "/var/tmp"

struct run_opts {
	const char *control;    /* the daemon's control socket */
	const char *device;     /* --device NAME, or NULL with ALL */
	bool all;               /* every device with the tracker attached */
	const char *repo;       /* --repo: one repository (version 2) for every device */
	const char *storage;    /* --storage DIR|FILE, or NULL for RUN_STORAGE_DEFAULT */
	uint64_t limit;         /* --limit, or 0: the sum of the devices' sizes */
	const struct source_tls *tls;
	unsigned connections;
	uint32_t block_size;    /* for a new repository */
	int level;              /* zstd level for a new repository; -1: the default */
	const char *key_file;   /* an encrypted repository's key */
	struct prune_rules keep; /* with PRUNE, applied after the backups */
	bool prune;
	bool show_progress;
};

/* Run it: open (or make) the repository and hold it, attach the tracker to
 * --device if it has none, create and take one snapshot of the devices
 * (self-growing storage), back each image up under its device's name (full
 * or incremental, and why), destroy the snapshot on every path, SIGINT and
 * SIGTERM included, and then apply the retention policy (prune). *RESULT gets an array of summaries, one per device
 * backed up and, with ALL, a total; it is set also when some device failed.
 * 0, or a negative errno after one line on stderr saying why. */
int run_backup(const struct run_opts *o, struct json_object **result);

#endif
