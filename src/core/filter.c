/* The filter stack: walking a request (or a capability or metadata-context
 * question) down to the first layer that implements it. */
#include "core/filter.h"

#include <errno.h>
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

typedef int (*cap_op)(struct filter *f);

static cap_op cap_of(const struct filter_ops *ops, enum stack_cap cap)
{
	switch (cap) {
	case CAP_WRITE:
		return ops->can_write;
	case CAP_TRIM:
		return ops->can_trim;
	case CAP_ZERO:
		return ops->can_zero;
	case CAP_FUA:
		return ops->can_fua;
	case CAP_CACHE:
		return ops->can_cache;
	case CAP_MULTI_CONN:
		return ops->can_multi_conn;
	}
	return NULL;
}

int stack_can(struct backing *b, struct filter *l, enum stack_cap cap)
{
	for (; l; l = l->below) {
		cap_op op = cap_of(l->ops, cap);

		if (op)
			return op(l);
	}
	switch (cap) {
	case CAP_WRITE:
		return backing_can_write(b);
	case CAP_TRIM:
		return backing_can_trim(b);
	case CAP_ZERO:
		return backing_can_zero(b);
	case CAP_FUA:
		return backing_can_fua(b);
	case CAP_CACHE:
		return backing_can_cache(b);
	case CAP_MULTI_CONN:
		return backing_can_multi_conn(b);
	}
	return 0;
}

int stack_list_contexts(struct backing *b, struct filter *l, meta_context_fn fn, void *opaque)
{
	int r;

	for (; l; l = l->below)
		if (l->ops->list_contexts && (r = l->ops->list_contexts(l, fn, opaque)) != 0)
			return r;
	return backing_list_contexts(b, fn, opaque);
}

int stack_context_extents(struct backing *b, struct filter *l, const char *name, uint64_t count,
			  uint64_t offset, uint32_t flags, struct extents *e)
{
	int r;

	for (; l; l = l->below)
		if (l->ops->context_extents &&
		    (r = l->ops->context_extents(l, name, count, offset, flags, e)) != -ENOENT)
			return r;
	return backing_context_extents(b, name, count, offset, flags, e);
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

int filter_next_can_write(struct filter *f)
{
	return stack_can(device_backing(f->dev), f->below, CAP_WRITE);
}

int filter_next_can_trim(struct filter *f)
{
	return stack_can(device_backing(f->dev), f->below, CAP_TRIM);
}

int filter_next_can_zero(struct filter *f)
{
	return stack_can(device_backing(f->dev), f->below, CAP_ZERO);
}

int filter_next_can_fua(struct filter *f)
{
	return stack_can(device_backing(f->dev), f->below, CAP_FUA);
}

int filter_next_can_cache(struct filter *f)
{
	return stack_can(device_backing(f->dev), f->below, CAP_CACHE);
}

int filter_next_can_multi_conn(struct filter *f)
{
	return stack_can(device_backing(f->dev), f->below, CAP_MULTI_CONN);
}
