/* A snapshot's event queue: low_free_space and corrupted events, waited for
 * with a timeout in milliseconds (blksnap's snapshot_wait_event). */
#ifndef BDF_BLKSNAP_EVENT_QUEUE_H
#define BDF_BLKSNAP_EVENT_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum event_code {
	EVENT_LOW_FREE_SPACE = 0, /* blksnap_event_code_low_free_space */
	EVENT_CORRUPTED = 1,      /* blksnap_event_code_corrupted */
};

struct event {
	enum event_code code;
	int64_t time_ns; /* CLOCK_REALTIME */
	union {
		struct {
			uint64_t requested_nr_sect;
		} low_free_space;
		struct {
			uint32_t dev_id_mj, dev_id_mn;
			int32_t err_code;
			char device[256];
		} corrupted;
	};
	struct event *next;
};

struct event_queue {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct event *head, **tail;
	bool closed;
};

void event_queue_init(struct event_queue *q);
/* Wakes every waiter (they get -ESRCH) and frees what is queued. */
void event_queue_close(struct event_queue *q);
void event_queue_destroy(struct event_queue *q);

/* Queue a copy of EV (time stamped here). */
void event_queue_push(struct event_queue *q, const struct event *ev);
/* Wait up to TIMEOUT_MS for an event. 0 and *OUT filled; -ETIMEDOUT; -ESRCH
 * when the queue was closed (the snapshot is gone). */
int event_queue_wait(struct event_queue *q, uint32_t timeout_ms, struct event *out);

#endif
