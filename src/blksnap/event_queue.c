/* Snapshot events (see event_queue.h). */
#include "blksnap/event_queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/lock_order.h"

void event_queue_init(struct event_queue *q)
{
	pthread_condattr_t ca;

	memset(q, 0, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	q->tail = &q->head;
}

static void drop_all(struct event_queue *q)
{
	while (q->head) {
		struct event *e = q->head;

		q->head = e->next;
		free(e);
	}
	q->tail = &q->head;
}

void event_queue_close(struct event_queue *q)
{
	lock_mutex(&q->lock, LOCK_EVENTS);
	q->closed = true;
	drop_all(q);
	pthread_cond_broadcast(&q->cond);
	unlock_mutex(&q->lock, LOCK_EVENTS);
}

void event_queue_destroy(struct event_queue *q)
{
	drop_all(q);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
}

void event_queue_push(struct event_queue *q, const struct event *ev)
{
	struct event *e = malloc(sizeof(*e));
	struct timespec ts;

	if (!e)
		return; /* an event lost to memory shortage; the state (error_code) stays */
	*e = *ev;
	clock_gettime(CLOCK_REALTIME, &ts);
	e->time_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	e->next = NULL;
	lock_mutex(&q->lock, LOCK_EVENTS);
	if (q->closed) {
		free(e);
	} else {
		*q->tail = e;
		q->tail = &e->next;
		pthread_cond_signal(&q->cond);
	}
	unlock_mutex(&q->lock, LOCK_EVENTS);
}

int event_queue_wait(struct event_queue *q, uint32_t timeout_ms, struct event *out)
{
	struct timespec until;
	int r = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	lock_mutex(&q->lock, LOCK_EVENTS);
	while (!q->head && !q->closed && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&q->cond, &q->lock, &until);
	if (q->closed) {
		r = -ESRCH;
	} else if (q->head) {
		struct event *e = q->head;

		q->head = e->next;
		if (!q->head)
			q->tail = &q->head;
		*out = *e;
		out->next = NULL;
		free(e);
		r = 0;
	} else {
		r = -ETIMEDOUT;
	}
	unlock_mutex(&q->lock, LOCK_EVENTS);
	return r;
}
