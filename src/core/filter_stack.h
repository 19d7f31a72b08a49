/* Dispatch of a request down a filter stack to the backing store (core-internal). */
#ifndef BDF_CORE_FILTER_STACK_H
#define BDF_CORE_FILTER_STACK_H

#include <stdint.h>

struct backing;
struct extents;
struct filter;

/* Run the request on layer L (a filter, or the backing store B when L is NULL). */
int stack_pread(struct backing *b, struct filter *l, void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int stack_pwrite(struct backing *b, struct filter *l, const void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int stack_flush(struct backing *b, struct filter *l, uint32_t flags);
int stack_trim(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags);
int stack_zero(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags);
int stack_cache(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags);
int stack_extents(struct backing *b, struct filter *l, uint64_t count, uint64_t offset, uint32_t flags,
		  struct extents *e);

#endif
