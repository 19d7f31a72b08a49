/* Payload memory of the NBD server (nbd-budget): the bytes of READ and WRITE
 * payloads in memory at once are bounded per connection and in total, and
 * no worker keeps a buffer once its reply has gone (a few large ones wait in
 * a small cache for the next request, counted in the total).
 *
 * A worker takes budget before it allocates (a WRITE's payload while it holds
 * its connection's read lock, since those bytes are next on the stream; a
 * READ's length after it let go) and gives it back once the reply is sent. A
 * request that does not fit waits; it does not fail.
 *
 * Why waiting cannot deadlock. A worker holding budget is (1) receiving its
 * WRITE's payload, (2) on the device, (3) sending its reply, or (4) holding
 * its connection's share while it waits for the total. (1) ends when its
 * client sends the bytes or hangs up; (2) ends; (3) ends when the client
 * reads, hangs up, or shutdown cuts the socket. A waiter for a share waits
 * for workers of its own connection in (1) to (4); a waiter for the total
 * waits for workers in (1) to (3), which hold the total, and a worker in (4)
 * holds none of it. So every wait ends in (1) to (3), which wait for nothing
 * here and need no read lock: a WRITE may wait with its read lock held. A
 * request over the maximum payload (nbd_transmission.c) holds one buffer
 * throughout and goes back and forth between (1) and (2), a WRITE with its
 * read lock, or between (2) and (3), a READ with its write lock: it waits for
 * nothing here either. (A client that will not read a reply until we have
 * read its next request stalls itself: it must read while it sends, as with
 * any server whose workers are all busy sending; the bound only makes that
 * come sooner.)
 *
 * The trade-off: there is no send timeout in transmission (as in other
 * servers: a slow reader is not an error), so a client that stops reading
 * its replies keeps its workers in sendmsg with their buffers. That pins its
 * own connection's share and no more; its other requests wait on that share
 * and other connections go on. It takes total/share such clients (eight by
 * default) to pin the total; then every connection's requests wait until
 * they read, hang up, or the daemon stops and cuts them after its grace
 * period. Memory stays bounded either way. */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "nbd/nbd_internal.h"
#include "nbd/nbd_proto.h"

/* Buffers up to this come from malloc and count by their length: its
 * per-thread arenas keep them cheap, and below its mmap threshold (128 KiB)
 * what it keeps after a free is small. */
#define SMALL_MAX (128u << 10)
#define CLASS_MIN_SHIFT 18
/* Larger ones are mapped in power-of-two sizes and count by that size. A
 * mapping per request costs (page faults, munmap's TLB flushes: sequential
 * 4 MiB reads went five times slower), and malloc would keep freed ones in
 * its arenas out of our count; so up to cache_max bytes of them wait here
 * for the next request of their size, counted in the total. */
#define CACHE_MAX (64u << 20)

_Static_assert(NBD_MAX_PAYLOAD == 1u << (CLASS_MIN_SHIFT + NBD_PAYLOAD_CLASSES - 1),
	       "the largest buffer class is the maximum payload");

/* The class of a large buffer of N bytes (at most NBD_MAX_PAYLOAD). */
static unsigned class_of(uint64_t n)
{
	unsigned k = 0;

	while (k < NBD_PAYLOAD_CLASSES - 1 && (UINT64_C(1) << (CLASS_MIN_SHIFT + k)) < n)
		k++;
	return k;
}

static uint64_t class_size(unsigned k)
{
	return UINT64_C(1) << (CLASS_MIN_SHIFT + k);
}

/* What a buffer for LEN bytes counts. */
static uint64_t cost(size_t len)
{
	return len <= SMALL_MAX ? len : class_size(class_of(len));
}

void nbd_budget_init(struct nbd_budget *b, uint64_t limit, uint64_t conn_limit)
{
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->cond, NULL);
	b->limit = limit;
	b->conn_limit = conn_limit;
	/* A quarter of the total at most: it is idle memory. */
	b->cache_max = limit / 4 < CACHE_MAX ? limit / 4 : CACHE_MAX;
}

void nbd_budget_destroy(struct nbd_budget *b)
{
	for (unsigned k = 0; k < NBD_PAYLOAD_CLASSES; k++)
		while (b->cache[k]) {
			void *p = b->cache[k];

			b->cache[k] = *(void **)p;
			munmap(p, class_size(k));
		}
	pthread_cond_destroy(&b->cond);
	pthread_mutex_destroy(&b->lock);
}

/* Under b->lock: unmap cached buffers, but none of class SKIP, until at most
 * ROOM bytes are cached. Under the lock, so that the memory is gone before
 * anyone counts on it; rare (below), and it is quick next to a request. */
static void cache_shrink(struct nbd_budget *b, unsigned skip, uint64_t room)
{
	for (unsigned k = 0; k < NBD_PAYLOAD_CLASSES && b->cached > room; k++)
		while (k != skip && b->cache[k] && b->cached > room) {
			void *p = b->cache[k];

			b->cache[k] = *(void **)p;
			b->cached -= class_size(k);
			munmap(p, class_size(k));
		}
}

/* Under b->lock: wait until N more bytes fit in C's share, then in the total,
 * and count them. */
static void budget_wait(struct nbd_conn *c, uint64_t n)
{
	struct nbd_budget *b = &c->srv->budget;

	/* First the connection's share: only its own requests hold it. */
	while (c->budget_used + n > b->conn_limit) {
		c->budget_waiting++;
		pthread_cond_wait(&c->budget_cond, &b->lock);
		c->budget_waiting--;
	}
	c->budget_used += n;
	/* Then the total, in turn behind the requests already waiting for it.
	 * Cached buffers do not make a request wait: they can be unmapped. */
	if (b->waiting > 0 || b->used + n > b->limit) {
		uint64_t ticket = b->next_ticket++;

		b->waiting++;
		while (b->serving != ticket || b->used + n > b->limit)
			pthread_cond_wait(&b->cond, &b->lock);
		b->waiting--;
		b->serving++;
		/* The next in turn may fit too. */
		if (b->waiting > 0)
			pthread_cond_broadcast(&b->cond);
	}
	b->used += n;
}

/* Under b->lock: give back N bytes of C's. */
static void budget_give(struct nbd_conn *c, uint64_t n)
{
	struct nbd_budget *b = &c->srv->budget;

	c->budget_used -= n;
	b->used -= n;
	if (c->budget_waiting > 0)
		pthread_cond_broadcast(&c->budget_cond);
	if (b->waiting > 0)
		pthread_cond_broadcast(&b->cond);
}

void *nbd_payload_get(struct nbd_conn *c, size_t len)
{
	struct nbd_budget *b = &c->srv->budget;
	uint64_t n = cost(len);
	void *p = NULL;

	if (len > NBD_MAX_PAYLOAD)
		return NULL; /* callers check; it could never fit a share */
	pthread_mutex_lock(&b->lock);
	budget_wait(c, n);
	if (n > SMALL_MAX && b->cache[class_of(n)]) {
		unsigned k = class_of(n);

		p = b->cache[k];
		b->cache[k] = *(void **)p;
		b->cached -= n;
	}
	/* Otherwise the cached buffers may have to make room: only when
	 * requests hold three quarters of the total or more, as the cache is
	 * at most a quarter. */
	cache_shrink(b, NBD_PAYLOAD_CLASSES, b->limit - b->used);
	pthread_mutex_unlock(&b->lock);
	if (p)
		return p;

	if (n <= SMALL_MAX) {
		p = malloc(len ? len : 1);
	} else {
		/* Every page gets written (by the device or by recv): fault
		 * them in at once rather than one by one. */
		p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (p == MAP_FAILED)
			p = NULL;
	}
	if (!p) {
		pthread_mutex_lock(&b->lock);
		budget_give(c, n);
		pthread_mutex_unlock(&b->lock);
	}
	return p;
}

void nbd_payload_put(struct nbd_conn *c, void *buf, size_t len)
{
	struct nbd_budget *b = &c->srv->budget;
	uint64_t n;

	if (!buf)
		return; /* LEN may be anything then: a refused request's */
	n = cost(len);
	if (n > SMALL_MAX) {
		unsigned k = class_of(n);

		pthread_mutex_lock(&b->lock);
		/* The size in use now wins: buffers of other sizes make room
		 * (rare: when the clients' request size changes). */
		if (n <= b->cache_max)
			cache_shrink(b, k, b->cache_max - n);
		if (b->cached + n <= b->cache_max) {
			*(void **)buf = b->cache[k];
			b->cache[k] = buf;
			b->cached += n;
			budget_give(c, n);
			pthread_mutex_unlock(&b->lock);
			return;
		}
		pthread_mutex_unlock(&b->lock);
		munmap(buf, n);
	} else {
		free(buf);
	}
	/* Counted until it is gone: the bound holds at every instant. */
	pthread_mutex_lock(&b->lock);
	budget_give(c, n);
	pthread_mutex_unlock(&b->lock);
}
