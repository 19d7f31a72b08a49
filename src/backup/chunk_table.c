/* The chunk table (chunk_table.h): linear probing on the first 8 bytes of
 * the id, which is a cryptographic hash and so already uniform; grown at
 * half full. Nothing is ever removed (a gc builds a new table). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backup/chunk_table.h"

struct slot {
	uint8_t id[CHUNK_ID_LEN];
	struct chunk_loc loc;
	bool used;
};

struct chunk_table {
	pthread_mutex_t lock;
	struct slot *v;
	size_t cap, n; /* cap: a power of two */
};

struct chunk_table *chunk_table_new(void)
{
	struct chunk_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->cap = 1024;
	if (!(t->v = calloc(t->cap, sizeof(*t->v)))) {
		free(t);
		return NULL;
	}
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

void chunk_table_free(struct chunk_table *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->v);
	free(t);
}

size_t chunk_table_count(struct chunk_table *t)
{
	size_t n;

	pthread_mutex_lock(&t->lock);
	n = t->n;
	pthread_mutex_unlock(&t->lock);
	return n;
}

static size_t home(const struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN])
{
	uint64_t h;

	memcpy(&h, id, sizeof(h));
	return (size_t)h & (t->cap - 1);
}

static struct slot *find(const struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN])
{
	for (size_t i = home(t, id);; i = (i + 1) & (t->cap - 1)) {
		struct slot *s = &t->v[i];

		if (!s->used || memcmp(s->id, id, CHUNK_ID_LEN) == 0)
			return s;
	}
}

static int grow(struct chunk_table *t)
{
	struct slot *old = t->v;
	size_t old_cap = t->cap;

	if (!(t->v = calloc(old_cap * 2, sizeof(*t->v)))) {
		t->v = old;
		return -ENOMEM;
	}
	t->cap = old_cap * 2;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].used)
			*find(t, old[i].id) = old[i];
	free(old);
	return 0;
}

/* The slot for ID, made if missing (*MADE says so); NULL when out of memory. */
static struct slot *get_slot(struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN], bool *made)
{
	struct slot *s = find(t, id);

	*made = false;
	if (s->used)
		return s;
	if ((t->n + 1) * 2 > t->cap) {
		if (grow(t) < 0)
			return NULL;
		s = find(t, id);
	}
	memcpy(s->id, id, CHUNK_ID_LEN);
	s->used = true;
	t->n++;
	*made = true;
	return s;
}

int chunk_table_put(struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN], const struct chunk_loc *loc)
{
	struct slot *s;
	bool made;

	pthread_mutex_lock(&t->lock);
	s = get_slot(t, id, &made);
	if (s)
		s->loc = *loc;
	pthread_mutex_unlock(&t->lock);
	return s ? 0 : -ENOMEM;
}

int chunk_table_get(struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN], struct chunk_loc *loc)
{
	struct slot *s;
	int r = -ENOENT;

	pthread_mutex_lock(&t->lock);
	s = find(t, id);
	if (s->used) {
		*loc = s->loc;
		r = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

bool chunk_table_claim(struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN])
{
	struct slot *s;
	bool made;

	pthread_mutex_lock(&t->lock);
	s = get_slot(t, id, &made);
	if (s && made)
		s->loc = (struct chunk_loc){ .pack = CHUNK_PENDING };
	pthread_mutex_unlock(&t->lock);
	return !s || made;
}

void chunk_table_each(struct chunk_table *t,
		      void (*fn)(void *opaque, const uint8_t id[CHUNK_ID_LEN], const struct chunk_loc *loc),
		      void *opaque)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->cap; i++)
		if (t->v[i].used)
			fn(opaque, t->v[i].id, &t->v[i].loc);
	pthread_mutex_unlock(&t->lock);
}
