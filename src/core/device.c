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

#include "common/log.h"
#include "core/backing.h"
#include "core/device_internal.h"
#include "core/filter.h"
#include "core/filter_stack.h"
#include "core/io.h"

struct device {
	char *name;
	struct backing *backing;
	bool readonly;
	_Atomic uint64_t size;
	pthread_rwlock_t io_lock;
	struct filter *top; /* guarded by io_lock (exclusive to change) */
	atomic_int refs;
	atomic_bool written; /* a change has gone down the stack since open */
};

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
	atomic_init(&dev->size, backing_size(dev->backing));
	atomic_init(&dev->refs, 1);
	atomic_init(&dev->written, false);
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

void device_put(struct device *dev)
{
	int r;

	if (!dev || atomic_fetch_sub(&dev->refs, 1) != 1)
		return;
	while (dev->top)
		device_detach(dev, dev->top->ops->name);
	if (!dev->readonly) {
		r = backing_flush(dev->backing);
		if (r < 0)
			log_error("%s: flush at close failed: %s", dev->name, strerror(-r));
	}
	backing_close(dev->backing);
	pthread_rwlock_destroy(&dev->io_lock);
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
 * wait out a shrink and then write past the new end (growing the file again). */
#define DEVICE_IO(dev, what, count, offset, write, call)                        \
	do {                                                                     \
		int r_;                                                          \
		pthread_rwlock_rdlock(&(dev)->io_lock);                          \
		r_ = device_check_range((dev), (count), (offset), (write));      \
		if (r_ < 0 || (count) == 0) {                                    \
			pthread_rwlock_unlock(&(dev)->io_lock);                  \
			return r_;                                               \
		}                                                                \
		if ((write) && !atomic_load_explicit(&(dev)->written, memory_order_relaxed)) \
			atomic_store(&(dev)->written, true);                    \
		r_ = (call);                                                     \
		pthread_rwlock_unlock(&(dev)->io_lock);                          \
		if (r_ < 0 && r_ != -ENOTSUP)                                    \
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

int device_changes(struct device *dev, struct backing_changes *out)
{
	return backing_changes(dev->backing, out);
}

int device_changed_extents(struct device *dev, uint8_t since, uint64_t count, uint64_t offset,
			   struct extents *e)
{
	int r = device_check_range(dev, count, offset, false);

	return r < 0 ? r : backing_changed_extents(dev->backing, since, count, offset, e);
}

int device_flush(struct device *dev, uint32_t flags)
{
	int r;

	if (dev->readonly)
		return 0;
	pthread_rwlock_rdlock(&dev->io_lock);
	r = stack_flush(dev->backing, dev->top, flags);
	pthread_rwlock_unlock(&dev->io_lock);
	if (r < 0)
		log_warn("%s: flush failed: %s", dev->name, strerror(-r));
	return r;
}

static struct filter **find_filter(struct device *dev, const char *name)
{
	struct filter **pp;

	for (pp = &dev->top; *pp; pp = &(*pp)->below)
		if (strcmp((*pp)->ops->name, name) == 0)
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

	pthread_rwlock_wrlock(&dev->io_lock);
	if (find_filter(dev, ops->name)) {
		r = -EALREADY;
	} else {
		f->below = dev->top;
		if (ops->attach)
			r = ops->attach(f, ctx);
		if (r == 0)
			dev->top = f;
	}
	pthread_rwlock_unlock(&dev->io_lock);

	if (r < 0) {
		free(f);
		if (r != -EALREADY)
			log_error("%s: attaching filter %s failed: %s", dev->name, ops->name, strerror(-r));
		return r;
	}
	log_info("%s: filter %s attached", dev->name, ops->name);
	return 0;
}

int device_detach(struct device *dev, const char *filter_name)
{
	struct filter **pp, *f;

	pthread_rwlock_wrlock(&dev->io_lock);
	pp = find_filter(dev, filter_name);
	if (!pp) {
		pthread_rwlock_unlock(&dev->io_lock);
		return -ENOENT;
	}
	f = *pp;
	*pp = f->below;
	if (f->ops->detach)
		f->ops->detach(f);
	pthread_rwlock_unlock(&dev->io_lock);
	free(f);
	log_info("%s: filter %s detached", dev->name, filter_name);
	return 0;
}

int device_with_filter(struct device *dev, const char *filter_name,
		       int (*fn)(struct filter *f, void *opaque), void *opaque)
{
	struct filter **pp;
	int r;

	pthread_rwlock_rdlock(&dev->io_lock);
	pp = find_filter(dev, filter_name);
	r = pp ? fn(*pp, opaque) : -ENOENT;
	pthread_rwlock_unlock(&dev->io_lock);
	return r;
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
	atomic_store(&dev->written, true);
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
	pthread_rwlock_wrlock(&dev->io_lock);
}

void device_resume(struct device *dev)
{
	pthread_rwlock_unlock(&dev->io_lock);
}

struct filter *device_filter_quiesced(struct device *dev, const char *filter_name)
{
	struct filter **pp = find_filter(dev, filter_name);

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

	pthread_rwlock_rdlock(&dev->io_lock);
	for (struct filter *f = dev->top; f && n < max; f = f->below)
		names[n++] = f->ops->name;
	pthread_rwlock_unlock(&dev->io_lock);
	return n;
}

bool device_has_filter(struct device *dev, const char *filter_name)
{
	bool found;

	pthread_rwlock_rdlock(&dev->io_lock);
	found = find_filter(dev, filter_name) != NULL;
	pthread_rwlock_unlock(&dev->io_lock);
	return found;
}
