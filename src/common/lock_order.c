/* The lock-order checks of debug builds (see lock_order.h). */
#include "common/lock_order.h"

#ifndef NDEBUG
#include <stdlib.h>

#include "common/log.h"

static const char *const names[LOCK_RANKS] = {
	[LOCK_BLKSNAP] = "blksnap",
	[LOCK_REGISTRY] = "registry",
	[LOCK_EXPORTS] = "exports",
	[LOCK_IMAGE_DRAIN] = "image drain",
	[LOCK_DEVICE_DRAIN] = "device drain",
	[LOCK_STRIPE] = "stripe",
	[LOCK_STORE_QUEUE] = "store queue",
	[LOCK_STORAGE] = "storage",
	[LOCK_CBT_MAP] = "cbt_map",
	[LOCK_EVENTS] = "events",
};

/* How many locks of each rank this thread holds. */
static _Thread_local unsigned short held[LOCK_RANKS];

void lock_order_acquire(enum lock_rank rank, bool many)
{
	for (int r = LOCK_RANKS - 1; r >= (int)rank; r--) {
		if (!held[r] || (r == (int)rank && many))
			continue;
		log_error("lock order: taking %s while holding %s (docs/locking.md)", names[rank], names[r]);
		abort();
	}
	held[rank]++;
}

void lock_order_release(enum lock_rank rank)
{
	if (!held[rank]) {
		log_error("lock order: releasing %s, which this thread does not hold", names[rank]);
		abort();
	}
	held[rank]--;
}
#endif
