/* The commands of bdfilter-backup, each returning 0 and a JSON summary, or a
 * negative errno after printing one line that says why. */
#ifndef BDF_BACKUP_BACKUP_H
#define BDF_BACKUP_BACKUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

struct repo;
struct source_tls;

struct backup_opts {
	const char *uri, *repo;
	const struct source_tls *tls;
	const char *bitmap; /* --bitmap, or NULL */
	unsigned connections;
	uint32_t block_size; /* for a new repository */
	bool incremental;
	bool show_progress;
	/* For bdfilter-backup run (all may be left zero): */
	struct repo *opened;     /* REPO, opened and locked by the caller (REPO_CREATE), who closes it */
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
	const struct source_tls *tls; /* for a --to URI */
	int64_t at; /* -1: the last backup */
	bool show_progress;
};
int restore_run(const struct restore_opts *o, struct json_object **result);

/* verify: *RESULT is set also when it finds damage (then 1 is returned). */
int verify_run(const char *repo, struct json_object **result);
int list_run(const char *repo, struct json_object **result);

#endif
