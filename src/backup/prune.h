/* prune: which backups a retention policy keeps (pure logic, unit-tested),
 * and the removal of the others with the garbage collection of what only
 * they used (docs/backup-repo.md, "Prune and gc"). */
#ifndef BDF_BACKUP_PRUNE_H
#define BDF_BACKUP_PRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

struct prune_rules {
	unsigned last, daily, weekly, monthly; /* 0: the rule keeps nothing */
};

struct prune_item {
	unsigned num;
	const char *device;
	int64_t time; /* seconds since the epoch, UTC */
	bool keep;
	const char *why; /* the first rule that keeps it: "last", "daily", ... */
};

/* Mark the items each device's policy keeps: the LAST newest; and the newest
 * of each of the DAILY latest days (UTC), WEEKLY latest ISO weeks, MONTHLY
 * latest months that hold a backup. Order of V does not matter. With no
 * rule at all, everything is kept. */
void prune_select(struct prune_item *v, size_t n, const struct prune_rules *k);

struct prune_opts {
	const char *repo, *key_file;
	const char *device; /* only this device's backups; NULL: every device */
	struct prune_rules keep;
	bool dry_run;
};
int prune_run(const struct prune_opts *o, struct json_object **result);

#endif
