/* The filter stack: walking a request down to the first layer that implements it. */
#include "core/filter.h"

#include <stddef.h>

#include "core/backing.h"
#include "core/device_internal.h"
#include "core/filter_stack.h"

int stack_pread(struct backing *b, struct filter *l, void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	for (; l; l = l->below)
		if (l->ops->pread)
			return l->ops->pread(l, buf, count, offset, flags);
	return backing_pread(b, buf, count, offset);
}

int stack_pwrite(struct backing *b, struct filter *l, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	for (; l; l = l->below)
		if (l->ops->pwrite)
			return l->ops->pwrite(l, buf, count, offset, flags);
	return backing_pwrite(b, buf, count, offset, flags);
}

int stack_flush(struct backing *b, struct filter *l, uint32_t flags)
{
	for (; l; l = l->below)
		if (l->ops->flush)
			return l->ops->flush(l, flags);
	return backing_flush(b);
}

int stack_trim(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags)
{
	for (; l; l = l->below)
		if (l->ops->trim)
			return l->ops->trim(l, count, offset, flags);
	return backing_trim(b, count, offset, flags);
}

int stack_zero(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags)
{
	for (; l; l = l->below)
		if (l->ops->zero)
			return l->ops->zero(l, count, offset, flags);
	return backing_zero(b, count, offset, flags);
}

int stack_cache(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags)
{
	for (; l; l = l->below)
		if (l->ops->cache)
			return l->ops->cache(l, count, offset, flags);
	return backing_cache(b, count, offset);
}

int stack_extents(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags,
		  struct extents *e)
{
	for (; l; l = l->below)
		if (l->ops->extents)
			return l->ops->extents(l, count, offset, flags, e);
	return backing_extents(b, count, offset, flags, e);
}

int filter_next_pread(struct filter *f, void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	return stack_pread(device_backing(f->dev), f->below, buf, count, offset, flags);
}

int filter_next_pwrite(struct filter *f, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	return stack_pwrite(device_backing(f->dev), f->below, buf, count, offset, flags);
}

int filter_next_flush(struct filter *f, uint32_t flags)
{
	return stack_flush(device_backing(f->dev), f->below, flags);
}

int filter_next_trim(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	return stack_trim(device_backing(f->dev), f->below, count, offset, flags);
}

int filter_next_zero(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	return stack_zero(device_backing(f->dev), f->below, count, offset, flags);
}

int filter_next_cache(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	return stack_cache(device_backing(f->dev), f->below, count, offset, flags);
}

int filter_next_extents(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags,
			struct extents *e)
{
	return stack_extents(device_backing(f->dev), f->below, count, offset, flags, e);
}
