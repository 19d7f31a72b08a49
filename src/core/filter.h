/* The filter contract: a small ops table that sees each request of a device before
 * the layer below it. A missing op passes the request through unchanged.
 *
 * Filters are stacked on a device (the newest on top) and attached and detached
 * live: the device drains its in-flight requests around every change of the stack,
 * so an op never runs while its filter is being attached or detached. */
#ifndef BDF_CORE_FILTER_H
#define BDF_CORE_FILTER_H

#include <stdint.h>

struct device;
struct extents;
struct filter;

struct filter_ops {
	const char *name;

	/* Set up f->priv. Runs with the device drained. CTX is what the caller of
	 * device_attach() passed: the state a filter shares across devices. */
	int (*attach)(struct filter *f, void *ctx);
	/* Tear down f->priv. Runs with the device drained. */
	void (*detach)(struct filter *f);
	/* The device is about to change from its current size to NEW_SIZE bytes.
	 * Runs with the device drained, before the backing store changes; a
	 * negative errno refuses the resize. The store may still fail to change
	 * after a filter said yes, so what a filter does here must be safe if the
	 * old size stays (the tracker declares its map corrupted: that only ever
	 * over-reports). */
	int (*resize)(struct filter *f, uint64_t new_size);

	int (*pread)(struct filter *f, void *buf, uint64_t count, uint64_t offset, uint32_t flags);
	int (*pwrite)(struct filter *f, const void *buf, uint64_t count, uint64_t offset, uint32_t flags);
	int (*flush)(struct filter *f, uint32_t flags);
	int (*trim)(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags);
	int (*zero)(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags);
	int (*cache)(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags);
	int (*extents)(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags,
		       struct extents *e);
};

struct filter {
	const struct filter_ops *ops;
	void *priv;
	struct device *dev;
	struct filter *below; /* NULL: the backing store is next */
};

/* Pass a request to the layer below F (the next filter down, or the backing store). */
int filter_next_pread(struct filter *f, void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int filter_next_pwrite(struct filter *f, const void *buf, uint64_t count, uint64_t offset, uint32_t flags);
int filter_next_flush(struct filter *f, uint32_t flags);
int filter_next_trim(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags);
int filter_next_zero(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags);
int filter_next_cache(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags);
int filter_next_extents(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags,
			struct extents *e);

#endif
