/* What blksnap keeps as module state, per daemon: the parameters and the
 * snapshots. Filters get it as their attach context. */
#ifndef BDF_BLKSNAP_BLKSNAP_H
#define BDF_BLKSNAP_BLKSNAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "blksnap/params.h"

#define BLKSNAP_VERSION_MAJOR 2
#define BLKSNAP_VERSION_MINOR 0
#define BLKSNAP_VERSION_REVISION 0
#define BLKSNAP_VERSION_BUILD 0

struct registry;
struct snapshot;
struct store_id;

struct blksnap {
	struct params params;
	struct registry *reg; /* devices by name; snapshot images are added here */
	pthread_mutex_t lock;
	struct snapshot *snapshots; /* guarded by lock */
	/* --state-dir (absolute), or NULL: trackers keep their CBT in memory only.
	 * Set before the first attach. */
	const char *state_dir;
	/* Set at a clean stop, once no client can write: a tracker detached from
	 * then on (as its device closes) saves its map CLEAN in state_dir instead
	 * of removing it. */
	atomic_bool stopping;
	/* Set before the first snapshot, or NULL: refuses (-EINVAL and a
	 * message) a difference storage on a store the daemon uses itself, which
	 * blksnap cannot know (the files of the FUSE export, the state
	 * directory's). */
	int (*storage_veto)(void *opaque, const struct store_id *ids, size_t n, const char *path, char *err,
			    size_t errlen);
	void *veto_opaque;
};

void blksnap_init(struct blksnap *bs, const struct params *p, struct registry *reg);
/* A clean stop begins: see stopping. */
void blksnap_stopping(struct blksnap *bs);
/* Destroys every snapshot. */
void blksnap_fini(struct blksnap *bs);

#endif
