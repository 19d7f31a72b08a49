/* Runs of repository blocks from byte extents: see block_list.h. */
#include <errno.h>
#include <stdlib.h>

#include "backup/block_list.h"

uint64_t block_count(uint64_t size, uint32_t block_size)
{
	return size / block_size + (size % block_size != 0);
}

uint32_t block_length(uint64_t b, uint64_t size, uint32_t block_size)
{
	uint64_t start = b * block_size;

	return size - start < block_size ? (uint32_t)(size - start) : block_size;
}

int block_list_add(struct block_list *l, uint64_t offset, uint64_t length, uint32_t block_size,
		   uint64_t size)
{
	uint64_t first, end;
	struct block_run *last;

	if (block_size == 0)
		return -EINVAL;
	if (length == 0 || offset >= size)
		return 0;
	if (length > size - offset)
		length = size - offset;
	first = offset / block_size;
	end = block_count(offset + length, block_size); /* rounded up */
	last = l->n ? &l->v[l->n - 1] : NULL;
	if (last && first < last->first)
		return -EINVAL;
	if (last && first <= last->first + last->count) {
		if (end > last->first + last->count) {
			l->blocks += end - (last->first + last->count);
			last->count = end - last->first;
		}
		return 0;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct block_run *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct block_run){ first, end - first };
	l->blocks += end - first;
	return 0;
}

void block_list_free(struct block_list *l)
{
	free(l->v);
	*l = (struct block_list){ 0 };
}
