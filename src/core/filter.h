/* The filter contract: a small ops table that sees each request of a device before
 * the layer below it. A missing op passes the request through unchanged.
 *
 * Filters are stacked on a device (the newest on top) and attached and detached
 * live: the device drains its in-flight requests around every change of the stack,
 * so an op never runs while its filter is being attached or detached. A filter is
 * named by its ops table (a filter type is one `const struct filter_ops`); its
 * name is for people. */
#ifndef BDF_CORE_FILTER_H
#define BDF_CORE_FILTER_H

#include <stdint.h>

#include "core/meta_context.h"

struct device;
struct extents;
struct filter;

struct filter_ops {
	const char *name;

	/* Set up f->priv. Runs with the device drained. CTX is what the caller of
	 * device_attach() passed: the state a filter shares across devices. */
	int (*attach)(struct filter *f, void *ctx);
	/* Tear down f->priv. Runs with the device drained. A filter that is in
	 * use (the tracker of a device in a snapshot) refuses with -EBUSY and
	 * stays attached; the check and the teardown are one step under the
	 * drain, so nothing can start using the filter in between. At the
	 * device's last reference nothing can use it any more: refusing there is
	 * a bug (logged, and the filter leaks). */
	int (*detach)(struct filter *f);
	/* The device is about to change from its current size to NEW_SIZE bytes.
	 * Runs with the device drained, before the backing store changes; a
	 * negative errno refuses the resize. The store may still fail to change
	 * after a filter said yes, so what a filter does here must be safe if the
	 * old size stays (the tracker declares its map corrupted: that only ever
	 * over-reports). */
	int (*resize)(struct filter *f, uint64_t new_size);

	/* What the layers from here down support: 1 yes, 0 no (a missing op
	 * asks the layer below). Exports advertise what the device's stack says
	 * (NBD's transmission flags). */
	int (*can_write)(struct filter *f);
	int (*can_trim)(struct filter *f);
	int (*can_zero)(struct filter *f);
	int (*can_fua)(struct filter *f);
	int (*can_cache)(struct filter *f);
	int (*can_multi_conn)(struct filter *f);

	/* Metadata contexts this filter publishes (as NBD's meta contexts):
	 * list calls FN for each name; extents fills E for one of them, and
	 * returns -ENOENT for a name that is not this filter's, so a request
	 * finds its publisher again by name (a client may hold a name across a
	 * detach). Both see the device as it is under the drain lock. */
	int (*list_contexts)(struct filter *f, meta_context_fn fn, void *opaque);
	int (*context_extents)(struct filter *f, const char *name, uint64_t count, uint64_t offset,
			       uint32_t flags, struct extents *e);

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
	unsigned holds;       /* core's: device_filter_hold() count, under the drain lock */
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
int filter_next_can_write(struct filter *f);
int filter_next_can_trim(struct filter *f);
int filter_next_can_zero(struct filter *f);
int filter_next_can_fua(struct filter *f);
int filter_next_can_cache(struct filter *f);
int filter_next_can_multi_conn(struct filter *f);

#endif
