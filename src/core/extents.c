/* Bounded, merged extent lists (see extents.h). */
#include "core/extents.h"

#include <errno.h>
#include <stdlib.h>

struct extents {
	uint64_t start, end, next;
	size_t count, cap, max;
	struct extent *v;
};

struct extents *extents_new(uint64_t start, uint64_t end, size_t max_count)
{
	struct extents *e;

	if (end < start || max_count == 0)
		return NULL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->start = e->next = start;
	e->end = end;
	e->max = max_count;
	return e;
}

void extents_free(struct extents *e)
{
	if (!e)
		return;
	free(e->v);
	free(e);
}

bool extents_done(const struct extents *e)
{
	/* A full list shrinks its end to what it describes (see extents_add). */
	return e->next >= e->end;
}

int extents_add(struct extents *e, uint64_t offset, uint64_t length, uint32_t type)
{
	uint64_t last;
	struct extent *x;

	if (length == 0 || e->next >= e->end)
		return 0;
	if (offset > e->next)
		return -EINVAL;
	/* Overflow-safe end of the new extent. */
	last = offset + length < offset ? UINT64_MAX : offset + length;
	if (last <= e->next)
		return 0; /* entirely before what we still need */
	offset = e->next;
	if (last > e->end)
		last = e->end;

	if (e->count > 0) {
		x = &e->v[e->count - 1];
		if (x->type == type) {
			x->length += last - offset;
			e->next = last;
			return 0;
		}
	}
	if (e->count == e->max) {
		/* Full: stop describing; callers see extents_done() via next == end. */
		e->end = e->next;
		return 0;
	}
	if (e->count == e->cap) {
		size_t ncap = e->cap ? e->cap * 2 : 16;
		struct extent *nv;

		if (ncap > e->max)
			ncap = e->max;
		nv = realloc(e->v, ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		e->v = nv;
		e->cap = ncap;
	}
	x = &e->v[e->count++];
	x->offset = offset;
	x->length = last - offset;
	x->type = type;
	e->next = last;
	return 0;
}

uint64_t extents_next(const struct extents *e)
{
	return e->next;
}

size_t extents_count(const struct extents *e)
{
	return e->count;
}

const struct extent *extents_get(const struct extents *e, size_t i)
{
	return i < e->count ? &e->v[i] : NULL;
}

uint64_t extents_start(const struct extents *e)
{
	return e->start;
}

uint64_t extents_end(const struct extents *e)
{
	return e->end;
}
