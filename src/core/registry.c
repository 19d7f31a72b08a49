/* The device table (see registry.h). */
#include "core/registry.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/lock_order.h"
#include "common/log.h"
#include "core/device.h"
#include "core/store_id.h"

#define MAX_OBSERVERS 4

struct store_claim {
	struct store_claim *next;
	const void *owner;
	struct store_id ids[STORE_IDS_MAX];
	size_t n_ids;
	size_t n_ranges;
	struct byte_range ranges[];
};

struct registry {
	pthread_mutex_t lock;
	struct device **devs;
	size_t n;
	struct store_claim *claims;
	struct registry_observer obs[MAX_OBSERVERS];
	size_t n_obs;
};

int registry_new(struct registry **out)
{
	struct registry *reg = calloc(1, sizeof(*reg));

	if (!reg)
		return -ENOMEM;
	pthread_mutex_init(&reg->lock, NULL);
	*out = reg;
	return 0;
}

static int remove_device(struct registry *reg, struct device *dev, bool force);

void registry_free(struct registry *reg)
{
	if (!reg)
		return;
	while (reg->n > 0) {
		struct device *dev = reg->devs[reg->n - 1];

		/* At a stop nothing holds a filter any more (the snapshots are
		 * gone); if something does, the device leaves all the same. */
		if (remove_device(reg, dev, true) < 0)
			log_error("%s: removed without a clean detach of its filters", device_name(dev));
	}
	while (reg->claims) {
		struct store_claim *c = reg->claims;

		reg->claims = c->next;
		free(c);
	}
	free(reg->devs);
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

int registry_observe(struct registry *reg, const struct registry_observer *obs)
{
	if (reg->n_obs == MAX_OBSERVERS)
		return -ENOSPC;
	reg->obs[reg->n_obs++] = *obs;
	return 0;
}

static ssize_t find(struct registry *reg, const char *name)
{
	for (size_t i = 0; i < reg->n; i++)
		if (strcmp(device_name(reg->devs[i]), name) == 0)
			return (ssize_t)i;
	return -1;
}

int registry_add(struct registry *reg, struct device *dev)
{
	struct device **v;
	size_t i;
	int r = 0;

	/* The lock is held across the observers, so that an add and a remove of
	 * the same name cannot interleave. Observers must not call back in. */
	lock_mutex(&reg->lock, LOCK_REGISTRY);
	if (find(reg, device_name(dev)) >= 0) {
		r = -EEXIST;
		goto out;
	}
	for (i = 0; i < reg->n; i++)
		if (device_same_store(reg->devs[i], dev)) {
			r = -EBUSY;
			goto out;
		}
	for (struct store_claim *c = reg->claims; c; c = c->next)
		for (i = 0; i < c->n_ranges; i++)
			if (device_store_overlaps(dev, c->ids, c->n_ids, c->ranges[i].offset, c->ranges[i].len)) {
				r = -EBUSY;
				goto out;
			}
	v = realloc(reg->devs, (reg->n + 1) * sizeof(*v));
	if (!v) {
		r = -ENOMEM;
		goto out;
	}
	reg->devs = v;
	for (i = 0; i < reg->n_obs && r == 0; i++)
		if (reg->obs[i].added)
			r = reg->obs[i].added(reg->obs[i].opaque, dev);
	if (r < 0) {
		while (i-- > 1)
			if (reg->obs[i - 1].removed)
				reg->obs[i - 1].removed(reg->obs[i - 1].opaque, dev);
		goto out;
	}
	v[reg->n++] = device_get(dev);
out:
	unlock_mutex(&reg->lock, LOCK_REGISTRY);
	return r;
}

struct device *registry_find_store(struct registry *reg, const struct store_id *ids, size_t n, uint64_t offset,
				   uint64_t len)
{
	struct device *dev = NULL;

	lock_mutex(&reg->lock, LOCK_REGISTRY);
	for (size_t i = 0; i < reg->n && !dev; i++)
		if (device_store_overlaps(reg->devs[i], ids, n, offset, len))
			dev = device_get(reg->devs[i]);
	unlock_mutex(&reg->lock, LOCK_REGISTRY);
	return dev;
}

int registry_claim(struct registry *reg, const struct store_id *ids, size_t n, const struct byte_range *r,
		   size_t n_r, const void *owner, struct store_claim **claim, struct device **dev)
{
	struct store_claim *c;
	int ret = 0;

	if (n > STORE_IDS_MAX)
		return -EINVAL;
	c = calloc(1, sizeof(*c) + n_r * sizeof(*r));
	if (!c)
		return -ENOMEM;
	c->owner = owner;
	memcpy(c->ids, ids, n * sizeof(*ids));
	c->n_ids = n;
	memcpy(c->ranges, r, n_r * sizeof(*r));
	c->n_ranges = n_r;
	if (dev)
		*dev = NULL;
	lock_mutex(&reg->lock, LOCK_REGISTRY);
	for (size_t i = 0; i < n_r && ret == 0; i++) {
		for (size_t k = 0; k < reg->n && ret == 0; k++)
			if (device_store_overlaps(reg->devs[k], ids, n, r[i].offset, r[i].len)) {
				if (dev)
					*dev = device_get(reg->devs[k]);
				ret = -EBUSY;
			}
		for (struct store_claim *o = reg->claims; o && ret == 0; o = o->next)
			for (size_t k = 0; k < o->n_ranges && ret == 0; k++)
				if (store_ids_overlap(o->ids, o->n_ids, o->ranges[k].offset, o->ranges[k].len, ids, n,
						      r[i].offset, r[i].len))
					ret = -EEXIST;
	}
	if (ret == 0) {
		c->next = reg->claims;
		reg->claims = c;
		*claim = c;
	}
	unlock_mutex(&reg->lock, LOCK_REGISTRY);
	if (ret < 0)
		free(c);
	return ret;
}

void registry_unclaim(struct registry *reg, struct store_claim *claim)
{
	lock_mutex(&reg->lock, LOCK_REGISTRY);
	for (struct store_claim **pp = &reg->claims; *pp; pp = &(*pp)->next)
		if (*pp == claim) {
			*pp = claim->next;
			free(claim);
			break;
		}
	unlock_mutex(&reg->lock, LOCK_REGISTRY);
}

void registry_unclaim_owner(struct registry *reg, const void *owner)
{
	lock_mutex(&reg->lock, LOCK_REGISTRY);
	for (struct store_claim **pp = &reg->claims; *pp;) {
		struct store_claim *c = *pp;

		if (c->owner == owner) {
			*pp = c->next;
			free(c);
		} else {
			pp = &c->next;
		}
	}
	unlock_mutex(&reg->lock, LOCK_REGISTRY);
}

/* Kill DEV (FORCE: even if that fails), then take it out of the table and
 * tell the observers. The kill runs without the table lock: it drains the
 * device, which may wait for requests that look devices up. */
static int remove_device(struct registry *reg, struct device *dev, bool force)
{
	ssize_t i;
	int r;

	r = device_kill(dev);
	if (r == -ENODEV)
		r = 0; /* killed by a remove that is taking it out right now */
	if (r < 0 && !force)
		return r;
	lock_mutex(&reg->lock, LOCK_REGISTRY);
	for (i = 0; i < (ssize_t)reg->n && reg->devs[i] != dev; i++)
		;
	if (i == (ssize_t)reg->n) {
		unlock_mutex(&reg->lock, LOCK_REGISTRY);
		return -ENOENT;
	}
	memmove(&reg->devs[i], &reg->devs[i + 1], (reg->n - (size_t)i - 1) * sizeof(*reg->devs));
	reg->n--;
	for (size_t k = reg->n_obs; k > 0; k--)
		if (reg->obs[k - 1].removed)
			reg->obs[k - 1].removed(reg->obs[k - 1].opaque, dev);
	unlock_mutex(&reg->lock, LOCK_REGISTRY);
	device_put(dev);
	return r;
}

int registry_remove(struct registry *reg, const char *name)
{
	struct device *dev = registry_get(reg, name);
	int r;

	if (!dev)
		return -ENOENT;
	r = device_removable(dev) ? remove_device(reg, dev, false) : -EBUSY;
	device_put(dev);
	return r;
}

int registry_remove_device(struct registry *reg, struct device *dev)
{
	return remove_device(reg, dev, false);
}

struct device *registry_get(struct registry *reg, const char *name)
{
	struct device *dev = NULL;
	ssize_t i;

	lock_mutex(&reg->lock, LOCK_REGISTRY);
	i = find(reg, name);
	if (i >= 0)
		dev = device_get(reg->devs[i]);
	unlock_mutex(&reg->lock, LOCK_REGISTRY);
	return dev;
}

struct device **registry_list(struct registry *reg, size_t *n)
{
	struct device **v;

	lock_mutex(&reg->lock, LOCK_REGISTRY);
	v = malloc((reg->n ? reg->n : 1) * sizeof(*v));
	if (v) {
		for (size_t i = 0; i < reg->n; i++)
			v[i] = device_get(reg->devs[i]);
		*n = reg->n;
	}
	unlock_mutex(&reg->lock, LOCK_REGISTRY);
	return v;
}
