/* Dispatch of a request down a filter stack to the backing store (core-internal). */
#ifndef BDF_CORE_FILTER_STACK_H
#define BDF_CORE_FILTER_STACK_H

#include <stdint.h>

#include "core/filter.h"

struct backing;
struct extents;

/* Run the request on layer L (a filter, or the backing store B when L is NULL). */
int stack_pread(struct backing *b, struct filter *l, void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int stack_pwrite(struct backing *b, struct filter *l, const void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int stack_flush(struct backing *b, struct filter *l, uint32_t flags);
int stack_trim(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags);
int stack_zero(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags);
int stack_cache(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags);
int stack_extents(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags,
		  struct extents *e);

/* The capabilities of the filter_ops can_* ops, and the store's answer. */
enum stack_cap { CAP_WRITE, CAP_TRIM, CAP_ZERO, CAP_FUA, CAP_CACHE, CAP_MULTI_CONN };
int stack_can(struct backing *b, struct filter *l, enum stack_cap cap);

/* Every layer from L down lists its contexts; the first that knows NAME answers. */
int stack_list_contexts(struct backing *b, struct filter *l, meta_context_fn fn, void *opaque);
int stack_context_extents(struct backing *b, struct filter *l, const char *name, uint64_t count,
			  uint64_t offset, uint32_t flags, struct extents *e);

#endif
