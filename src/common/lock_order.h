/* One lock order for the whole daemon (docs/locking.md), checked in debug
 * builds: each thread keeps the ranks of the locks it holds, and taking a
 * lock whose rank is not above all of them aborts with both names, before
 * the deadlock it could make. Locks of one rank that a thread may hold
 * several of (devices' drain locks, taken in name order by a take) say so.
 * Release builds (NDEBUG) check nothing and pay nothing. */
#ifndef BDF_COMMON_LOCK_ORDER_H
#define BDF_COMMON_LOCK_ORDER_H

#include <pthread.h>
#include <stdbool.h>

enum lock_rank {
	LOCK_BLKSNAP = 1,   /* struct blksnap: the snapshots */
	LOCK_REGISTRY,      /* the device table and the claimed stores */
	LOCK_EXPORTS,       /* the NBD server's exports, the FUSE export's files */
	LOCK_IMAGE_DRAIN,   /* a snapshot image's drain lock (a device over a custom store) */
	LOCK_DEVICE_DRAIN,  /* a device's drain lock; several, in name order */
	LOCK_STRIPE,        /* a diff area's stripe */
	LOCK_STORE_QUEUE,   /* a diff area's queue of copies to store */
	LOCK_STORAGE,       /* a difference storage */
	LOCK_CBT_MAP,       /* a CBT map */
	LOCK_EVENTS,        /* a snapshot's event queue */
	LOCK_RANKS
};

#ifdef NDEBUG
static inline void lock_order_acquire(enum lock_rank rank, bool many) { (void)rank; (void)many; }
static inline void lock_order_release(enum lock_rank rank) { (void)rank; }
#else
/* Before taking a lock of RANK (MANY: this thread may hold others of it). */
void lock_order_acquire(enum lock_rank rank, bool many);
/* After letting go of one. */
void lock_order_release(enum lock_rank rank);
#endif

static inline void lock_mutex(pthread_mutex_t *m, enum lock_rank rank)
{
	lock_order_acquire(rank, false);
	pthread_mutex_lock(m);
}

static inline void unlock_mutex(pthread_mutex_t *m, enum lock_rank rank)
{
	pthread_mutex_unlock(m);
	lock_order_release(rank);
}

#endif
