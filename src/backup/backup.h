/* The commands of bdfilter-backup, each returning 0 and a JSON summary, or a
 * negative errno after printing one line that says why. */
#ifndef BDF_BACKUP_BACKUP_H
#define BDF_BACKUP_BACKUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

struct repo2;
struct source_tls;

struct backup_opts {
	const char *uri, *repo;
	const struct source_tls *tls;
	const char *bitmap; /* --bitmap, or NULL */
	unsigned connections;
	uint32_t block_size; /* for a new repository */
	bool incremental;
	bool show_progress;
	/* Version 2 repositories. */
	const char *device;   /* the name the backups go under; NULL: from the URI */
	const char *key_file; /* an encrypted repository's key (a new one is made encrypted) */
	int level;            /* zstd level for a new repository; 0 none, -1 the default */
	int repo_version;     /* for a new repository: 1 or 2; 0: 2 */
	/* For bdfilter-backup run (all may be left zero): */
	struct repo2 *opened;    /* REPO, opened and locked (APPEND) by the caller, who closes it */
	bool choose;             /* incremental where the chain goes on, else full; "reason" says why */
	const char *full_reason; /* with CHOOSE: full for this reason, unless the repository is empty */
	const atomic_bool *stop; /* once true, the copy stops: -EINTR, nothing stored, no message */
};
/* A full or incremental backup of O->uri into O->repo. With CHOOSE the kind
 * is picked once the export has said what it is: an incremental where its
 * generation is the repository's last backup's and its snapshot number
 * later, else a full; the summary's "reason" says why. */
int backup_run(const struct backup_opts *o, struct json_object **result);

struct restore_opts {
	const char *repo, *to;
	const char *key_file;
	const char *device; /* version 2, without AT: the last backup of this device */
	unsigned writers; /* 0: the default */
	const struct source_tls *tls; /* for a --to URI */
	int64_t at; /* -1: the last backup */
	bool show_progress;
};
int restore_run(const struct restore_opts *o, struct json_object **result);

/* serve and mount: in the foreground until SIGINT or SIGTERM (mount: or an
 * unmount from outside), then 0; one line on stdout once ready. */
struct serve_opts {
	const char *repo;
	const char *key_file;    /* an encrypted repository's key, else NULL */
	int64_t at;              /* -1: the last usable backup (of DEVICE) */
	const char *device;      /* version 2: whose last backup; NULL: any */
	const char *listen;      /* unix:PATH or tcp:HOST:PORT */
	const char *export_name; /* NULL: backup-N */
	const char *tls_creds, *tls_psk; /* the server's credentials, or NULL */
};
int serve_run(const struct serve_opts *o);

struct mount_opts {
	const char *repo;
	const char *key_file;
	int64_t at;
	const char *device; /* as serve_opts' */
	const char *dir;  /* the mount point */
	const char *name; /* the file's; NULL: disk.img */
};
int mount_run(const struct mount_opts *o);

/* verify: *RESULT is set also when it finds damage (then 1 is returned).
 * DEEP: every chunk fetched and checked (version 1 always reads every
 * block). KEY_FILE: an encrypted repository's key, else NULL. */
int verify_run(const char *repo, const char *key_file, bool deep, struct json_object **result);
int list_run(const char *repo, const char *key_file, struct json_object **result);
/* Sizes before and after dedup and compression (version 2). */
int info_run(const char *repo, const char *key_file, struct json_object **result);

/* The version 2 readers behind them (inspect2.c). */
int verify2_run(const char *repo, const char *key_file, bool deep, struct json_object **result);
int list2_run(const char *repo, const char *key_file, struct json_object **result);
int info2_run(const char *repo, const char *key_file, struct json_object **result);

#endif
