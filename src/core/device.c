/* Devices: range checks, the drain lock around stack changes, and dispatch
 * into the filter stack.
 *
 * Requests hold io_lock shared for their whole duration; attach, detach and
 * resize take it exclusive, which waits for the requests in flight and holds new
 * ones back until the stack is consistent again. The lock prefers writers, so a
 * steady stream of requests cannot starve an attach.
 *
 * The size changes only under io_lock exclusive, and the data path checks ranges
 * under io_lock shared, so no request reaches a filter or the store past the
 * current end. It is atomic too, for the readers that hold no lock (an NBD
 * handshake, a listing, a range pre-check). */
#include "core/device.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/lock_order.h"
#include "common/log.h"
#include "core/backing.h"
#include "core/device_internal.h"
#include "core/filter.h"
#include "core/filter_stack.h"
#include "core/io.h"

/* A description set by the device's maker; replaced ones are kept until
 * the device goes, since an export may be sending one. */
struct description {
	struct description *older;
	char text[];
};

struct device {
	char *name;
	struct backing *backing;
	bool readonly;
	bool removable;
	_Atomic uint64_t size;
	pthread_rwlock_t io_lock;
	struct filter *top; /* guarded by io_lock (exclusive to change) */
	bool killed;        /* guarded by io_lock (exclusive to change) */
	atomic_int refs;
	atomic_bool written; /* a change has gone down the stack since open */
	/* Run once before the first change, unless a filter of type
	 * first_write_unless is attached then (device_on_first_write); the
	 * writers that come meanwhile wait on first_write_lock (a leaf). */
	pthread_mutex_t first_write_lock;
	void (*first_write)(struct device *dev, void *opaque);
	void *first_write_opaque;
	const struct filter_ops *first_write_unless;
	enum lock_rank drain_rank; /* an image's drain lock comes before its origin's */
	_Atomic(struct description *) description;
};

static void drain_rdlock(struct device *dev)
{
	lock_order_acquire(dev->drain_rank, true);
	pthread_rwlock_rdlock(&dev->io_lock);
}

static void drain_wrlock(struct device *dev)
{
	lock_order_acquire(dev->drain_rank, true);
	pthread_rwlock_wrlock(&dev->io_lock);
}

static void drain_unlock(struct device *dev)
{
	pthread_rwlock_unlock(&dev->io_lock);
	lock_order_release(dev->drain_rank);
}

int device_open(const char *name, const char *path, bool readonly, struct device **out)
{
	struct backing *b;
	int r;

	r = backing_open(path, readonly, &b);
	if (r < 0)
		return r;
	r = device_new(name, b, readonly, out);
	if (r < 0)
		backing_close(b);
	return r;
}

int device_new(const char *name, struct backing *b, bool readonly, struct device **out)
{
	pthread_rwlockattr_t attr;
	struct device *dev;

	dev = calloc(1, sizeof(*dev));
	if (!dev || !(dev->name = strdup(name))) {
		free(dev);
		return -ENOMEM;
	}
	dev->backing = b;
	dev->readonly = readonly;
	dev->removable = true;
	dev->drain_rank = backing_is_custom(b) ? LOCK_IMAGE_DRAIN : LOCK_DEVICE_DRAIN;
	atomic_init(&dev->description, NULL);
	atomic_init(&dev->size, backing_size(dev->backing));
	atomic_init(&dev->refs, 1);
	atomic_init(&dev->written, false);
	pthread_mutex_init(&dev->first_write_lock, NULL);
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&dev->io_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	*out = dev;
	return 0;
}

struct device *device_get(struct device *dev)
{
	atomic_fetch_add(&dev->refs, 1);
	return dev;
}

/* Detach F (its device drained). A held filter, or one whose detach op says
 * no, stays. */
static int detach_locked(struct device *dev, struct filter **pp)
{
	struct filter *f = *pp;
	int r;

	if (f->holds)
		return -EBUSY;
	if (f->ops->detach) {
		r = f->ops->detach(f);
		if (r < 0)
			return r;
	}
	*pp = f->below;
	log_info("%s: filter %s detached", dev->name, f->ops->name);
	free(f);
	return 0;
}

void device_put(struct device *dev)
{
	struct description *d;
	int r;

	if (!dev || atomic_fetch_sub(&dev->refs, 1) != 1)
		return;
	/* Nothing else holds the device: no filter is held, no request runs. */
	while (dev->top) {
		r = detach_locked(dev, &dev->top);
		if (r < 0) {
			log_error("%s: filter %s refused to detach at close (%s): a bug; leaking it",
				  dev->name, dev->top->ops->name, strerror(-r));
			dev->top = dev->top->below;
		}
	}
	if (!dev->readonly) {
		r = backing_flush(dev->backing);
		/* A device taken out of service (a destroyed snapshot's image,
		 * whose store is gone) fails it, and no one is waiting for it. */
		if (r < 0 && !dev->killed)
			log_error("%s: flush at close failed: %s", dev->name, strerror(-r));
	}
	backing_close(dev->backing);
	pthread_rwlock_destroy(&dev->io_lock);
	pthread_mutex_destroy(&dev->first_write_lock);
	for (d = atomic_load(&dev->description); d;) {
		struct description *older = d->older;

		free(d);
		d = older;
	}
	free(dev->name);
	free(dev);
}

const char *device_name(const struct device *dev)
{
	return dev->name;
}

const char *device_path(const struct device *dev)
{
	return backing_path(dev->backing);
}

uint64_t device_size(const struct device *dev)
{
	return atomic_load(&dev->size);
}

bool device_written(const struct device *dev)
{
	return atomic_load(&dev->written);
}

bool device_readonly(const struct device *dev)
{
	return dev->readonly;
}

uint32_t device_logical_block_size(const struct device *dev)
{
	return backing_logical_block_size(dev->backing);
}

struct backing *device_backing(struct device *dev)
{
	return dev->backing;
}

int device_check_range(const struct device *dev, uint64_t count, uint64_t offset, bool write)
{
	uint64_t size = atomic_load(&dev->size); /* once: a resize may change it */

	if (write && dev->readonly)
		return -EPERM;
	/* offset + count > size, written so that it cannot overflow */
	if (offset > size || count > size - offset)
		return write ? -ENOSPC : -EINVAL;
	return 0;
}

static void log_io_error(struct device *dev, const char *what, uint64_t count, uint64_t offset, int r)
{
	log_warn("%s: %s of %llu bytes at %llu failed: %s", dev->name, what,
		 (unsigned long long)count, (unsigned long long)offset, strerror(-r));
}

/* The range is checked under the drain lock: checked before it, a request could
 * wait out a shrink and then write past the new end (growing the file again).
 * A killed device refuses everything (-ENODEV, not logged: its clients are
 * told, the log was told once at the kill). */
static struct filter **find_filter(struct device *dev, const struct filter_ops *ops);

/* The first change since open: the hook first, then the flag, and every
 * writer behind the flag. Under the drain lock (read or write): the stack
 * cannot change meanwhile. */
static void first_write(struct device *dev)
{
	pthread_mutex_lock(&dev->first_write_lock);
	if (!atomic_load(&dev->written)) {
		if (dev->first_write && !(dev->first_write_unless && find_filter(dev, dev->first_write_unless)))
			dev->first_write(dev, dev->first_write_opaque);
		atomic_store(&dev->written, true);
	}
	pthread_mutex_unlock(&dev->first_write_lock);
}

void device_on_first_write(struct device *dev, const struct filter_ops *unless,
			   void (*fn)(struct device *dev, void *opaque), void *opaque)
{
	pthread_mutex_lock(&dev->first_write_lock);
	dev->first_write = fn;
	dev->first_write_opaque = opaque;
	dev->first_write_unless = unless;
	pthread_mutex_unlock(&dev->first_write_lock);
}

#define DEVICE_IO(dev, what, count, offset, write, call)                        \
	do {                                                                     \
		int r_;                                                          \
		drain_rdlock(dev);                                               \
		r_ = (dev)->killed ? -ENODEV : device_check_range((dev), (count), (offset), (write)); \
		if (r_ < 0 || (count) == 0) {                                    \
			drain_unlock(dev);                                       \
			return r_;                                               \
		}                                                                \
		if ((write) && !atomic_load_explicit(&(dev)->written, memory_order_acquire)) \
			first_write(dev);                                        \
		r_ = (call);                                                     \
		drain_unlock(dev);                                               \
		if (r_ < 0 && r_ != -ENOTSUP && r_ != -ENODEV)                   \
			log_io_error((dev), (what), (count), (offset), r_);      \
		return r_;                                                       \
	} while (0)

int device_pread(struct device *dev, void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	DEVICE_IO(dev, "read", count, offset, false,
		  stack_pread(dev->backing, dev->top, buf, count, offset, flags));
}

int device_pwrite(struct device *dev, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	DEVICE_IO(dev, "write", count, offset, true,
		  stack_pwrite(dev->backing, dev->top, buf, count, offset, flags));
}

int device_trim(struct device *dev, uint64_t count, uint64_t offset, uint32_t flags)
{
	DEVICE_IO(dev, "trim", count, offset, true,
		  stack_trim(dev->backing, dev->top, count, offset, flags));
}

int device_zero(struct device *dev, uint64_t count, uint64_t offset, uint32_t flags)
{
	DEVICE_IO(dev, "write-zeroes", count, offset, true,
		  stack_zero(dev->backing, dev->top, count, offset, flags));
}

int device_cache(struct device *dev, uint64_t count, uint64_t offset, uint32_t flags)
{
	DEVICE_IO(dev, "cache", count, offset, false,
		  stack_cache(dev->backing, dev->top, count, offset, flags));
}

int device_extents(struct device *dev, uint64_t count, uint64_t offset, uint32_t flags, struct extents *e)
{
	DEVICE_IO(dev, "block-status", count, offset, false,
		  stack_extents(dev->backing, dev->top, count, offset, flags, e));
}

int device_list_contexts(struct device *dev, meta_context_fn fn, void *opaque)
{
	int r = 0;

	drain_rdlock(dev);
	if (!dev->killed)
		r = stack_list_contexts(dev->backing, dev->top, fn, opaque);
	drain_unlock(dev);
	return r;
}

int device_context_extents(struct device *dev, const char *name, uint64_t count, uint64_t offset,
			   uint32_t flags, struct extents *e)
{
	int r;

	drain_rdlock(dev);
	r = dev->killed ? -ENODEV : device_check_range(dev, count, offset, false);
	if (r == 0 && count > 0)
		r = stack_context_extents(dev->backing, dev->top, name, count, offset, flags, e);
	drain_unlock(dev);
	return r;
}

static bool device_can(struct device *dev, enum stack_cap cap)
{
	int r;

	if (dev->readonly && (cap == CAP_WRITE || cap == CAP_TRIM || cap == CAP_ZERO))
		return false;
	drain_rdlock(dev);
	r = stack_can(dev->backing, dev->top, cap);
	drain_unlock(dev);
	return r > 0;
}

bool device_can_write(struct device *dev)
{
	return device_can(dev, CAP_WRITE);
}

bool device_can_trim(struct device *dev)
{
	return device_can(dev, CAP_TRIM);
}

bool device_can_zero(struct device *dev)
{
	return device_can(dev, CAP_ZERO);
}

bool device_can_fua(struct device *dev)
{
	return device_can(dev, CAP_FUA);
}

bool device_can_cache(struct device *dev)
{
	return device_can(dev, CAP_CACHE);
}

bool device_can_multi_conn(struct device *dev)
{
	return device_can(dev, CAP_MULTI_CONN);
}

const char *device_description(struct device *dev)
{
	struct description *d = atomic_load(&dev->description);

	return d ? d->text : backing_path(dev->backing);
}

int device_set_description(struct device *dev, const char *desc)
{
	size_t len = strlen(desc);
	struct description *d = malloc(sizeof(*d) + len + 1);

	if (!d)
		return -ENOMEM;
	memcpy(d->text, desc, len + 1);
	d->older = atomic_load(&dev->description);
	while (!atomic_compare_exchange_weak(&dev->description, &d->older, d))
		;
	return 0;
}

bool device_same_store(const struct device *a, const struct device *b)
{
	return backing_same_store(a->backing, b->backing);
}

bool device_store_overlaps(const struct device *dev, const struct store_id *ids, size_t n, uint64_t offset,
			   uint64_t len)
{
	return backing_overlaps(dev->backing, ids, n, offset, len);
}

void device_set_removable(struct device *dev, bool removable)
{
	dev->removable = removable;
}

bool device_removable(const struct device *dev)
{
	return dev->removable;
}

int device_kill(struct device *dev)
{
	int r = 0;

	drain_wrlock(dev);
	if (dev->killed) {
		r = -ENODEV;
		goto out;
	}
	for (struct filter *f = dev->top; f; f = f->below)
		if (f->holds) {
			r = -EBUSY;
			goto out;
		}
	while (dev->top) {
		r = detach_locked(dev, &dev->top);
		if (r < 0)
			goto out; /* a filter said no: the device stays in service */
	}
	dev->killed = true;
out:
	drain_unlock(dev);
	if (r == 0)
		log_debug("%s: out of service; its requests fail from now on", dev->name);
	return r;
}

bool device_killed(struct device *dev)
{
	bool k;

	drain_rdlock(dev);
	k = dev->killed;
	drain_unlock(dev);
	return k;
}

int device_flush(struct device *dev, uint32_t flags)
{
	int r;

	if (dev->readonly)
		return 0;
	drain_rdlock(dev);
	r = dev->killed ? -ENODEV : stack_flush(dev->backing, dev->top, flags);
	drain_unlock(dev);
	if (r < 0 && r != -ENODEV)
		log_warn("%s: flush failed: %s", dev->name, strerror(-r));
	return r;
}

static struct filter **find_filter(struct device *dev, const struct filter_ops *ops)
{
	struct filter **pp;

	for (pp = &dev->top; *pp; pp = &(*pp)->below)
		if ((*pp)->ops == ops)
			return pp;
	return NULL;
}

int device_attach(struct device *dev, const struct filter_ops *ops, void *ctx)
{
	struct filter *f;
	int r = 0;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->ops = ops;
	f->dev = dev;

	drain_wrlock(dev);
	if (dev->killed) {
		r = -ENODEV;
	} else if (find_filter(dev, ops)) {
		r = -EALREADY;
	} else {
		f->below = dev->top;
		if (ops->attach)
			r = ops->attach(f, ctx);
		if (r == 0)
			dev->top = f;
	}
	drain_unlock(dev);

	if (r < 0) {
		free(f);
		if (r != -EALREADY && r != -ENODEV)
			log_error("%s: attaching filter %s failed: %s", dev->name, ops->name, strerror(-r));
		return r;
	}
	log_info("%s: filter %s attached", dev->name, ops->name);
	return 0;
}

int device_detach(struct device *dev, const struct filter_ops *ops)
{
	struct filter **pp;
	int r;

	drain_wrlock(dev);
	pp = find_filter(dev, ops);
	r = pp ? detach_locked(dev, pp) : -ENOENT;
	drain_unlock(dev);
	return r;
}

int device_with_filter(struct device *dev, const struct filter_ops *ops,
		       int (*fn)(struct filter *f, void *opaque), void *opaque)
{
	struct filter **pp;
	int r;

	drain_rdlock(dev);
	pp = find_filter(dev, ops);
	r = pp ? fn(*pp, opaque) : -ENOENT;
	drain_unlock(dev);
	return r;
}

/* Holds change under the drain lock held exclusive, like the stack: a
 * detach, which checks them under it, cannot interleave with a hold. */
int device_filter_hold(struct device *dev, const struct filter_ops *ops)
{
	struct filter **pp;
	int r = 0;

	drain_wrlock(dev);
	pp = find_filter(dev, ops);
	if (dev->killed)
		r = -ENODEV;
	else if (!pp)
		r = -ENOENT;
	else
		(*pp)->holds++;
	drain_unlock(dev);
	return r;
}

void device_filter_release(struct device *dev, const struct filter_ops *ops)
{
	struct filter **pp;

	drain_wrlock(dev);
	pp = find_filter(dev, ops);
	if (pp && (*pp)->holds > 0)
		(*pp)->holds--;
	else
		log_error("%s: filter %s released more than held: a bug", dev->name, ops->name);
	drain_unlock(dev);
}

int device_resize(struct device *dev, uint64_t size, uint64_t *old_size)
{
	bool probe = size == DEVICE_SIZE_PROBE;
	struct filter *f;
	uint64_t old;
	int r = 0;

	if (!probe) {
		if (size < BDF_SECTOR_SIZE || size % BDF_SECTOR_SIZE || size > INT64_MAX)
			return -EINVAL;
		if (dev->readonly)
			return -EPERM;
	}
	/* Before the filters hear of it: they must not for a resize that cannot be. */
	r = backing_can_resize(dev->backing, !probe);
	if (r < 0)
		return r;
	device_quiesce(dev);
	old = atomic_load(&dev->size);
	if (old_size)
		*old_size = old;
	if (dev->killed) {
		r = -ENODEV;
		goto out;
	}
	/* A held filter (a tracker in a snapshot) relies on the size it has. */
	for (f = dev->top; f; f = f->below)
		if (f->holds) {
			r = -EBUSY;
			goto out;
		}
	if (probe) {
		r = backing_probe_size(dev->backing, &size);
		if (r < 0 || size == old)
			goto out; /* nothing changes, and the CBT stays good */
	}
	if (size != old) {
		for (f = dev->top; f; f = f->below) {
			if (!f->ops->resize)
				continue;
			r = f->ops->resize(f, size);
			if (r < 0) {
				log_info("%s: filter %s refused a resize to %llu bytes: %s", dev->name,
					 f->ops->name, (unsigned long long)size, strerror(-r));
				goto out;
			}
		}
	}
	/* -s truncates even to the same device size: the file may hold a partial
	 * sector past it, or have been grown behind our back. */
	first_write(dev);
	r = backing_resize(dev->backing, size, !probe);
	if (r == 0)
		atomic_store(&dev->size, size);
out:
	device_resume(dev);
	if (r == 0 && size != old)
		log_info("%s: resized from %llu to %llu bytes", dev->name, (unsigned long long)old,
			 (unsigned long long)size);
	return r;
}

void device_quiesce(struct device *dev)
{
	drain_wrlock(dev);
}

void device_resume(struct device *dev)
{
	drain_unlock(dev);
}

struct backing *device_swap_backing_quiesced(struct device *dev, struct backing *nb)
{
	struct backing *old = dev->backing;

	dev->backing = nb;
	return old;
}

struct filter *device_filter_quiesced(struct device *dev, const struct filter_ops *ops)
{
	struct filter **pp = find_filter(dev, ops);

	return pp ? *pp : NULL;
}

bool device_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 255)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f || *s == ',' || *s == '=' || *s == '/')
			return false;
	return true;
}

size_t device_filter_names(struct device *dev, const char **names, size_t max)
{
	size_t n = 0;

	drain_rdlock(dev);
	for (struct filter *f = dev->top; f && n < max; f = f->below)
		names[n++] = f->ops->name;
	drain_unlock(dev);
	return n;
}

bool device_has_filter(struct device *dev, const struct filter_ops *ops)
{
	bool found;

	drain_rdlock(dev);
	found = find_filter(dev, ops) != NULL;
	drain_unlock(dev);
	return found;
}
