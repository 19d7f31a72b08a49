/* The devices a daemon serves, by name. Observers (the NBD server, later FUSE)
 * hear of every device added and removed, so that the control plane only deals
 * with devices and never with exports. */
#ifndef BDF_CORE_REGISTRY_H
#define BDF_CORE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct device;
struct registry;

struct registry_observer {
	/* A device was added; nonzero undoes the add (the error goes to the caller). */
	int (*added)(void *opaque, struct device *dev);
	/* A device is being removed. */
	void (*removed)(void *opaque, struct device *dev);
	void *opaque;
};

int registry_new(struct registry **out);
/* Removes (kills and releases) every device, newest first. */
void registry_free(struct registry *reg);

/* At most 4 observers; they are called in the order they were added. */
int registry_observe(struct registry *reg, const struct registry_observer *obs);

/* Takes a reference on DEV. -EEXIST if the name is taken; -EBUSY if DEV's
 * store (its file or block device) is another device's store already, or
 * shares a byte with a claimed range (a snapshot's difference storage): two
 * users of one store would each miss the other's writes (a tracker would not
 * see them, a snapshot would not copy before them). */
int registry_add(struct registry *reg, struct device *dev);
struct store_id;
/* A device whose store shares a byte with [offset, offset+len) of the store
 * with ids IDS (core/store_id.h), if any: a new reference, or NULL. */
struct device *registry_find_store(struct registry *reg, const struct store_id *ids, size_t n, uint64_t offset,
				   uint64_t len);
/* Stores in use that are not devices: a snapshot's difference storage
 * claims the ranges it writes to, so that no device is ever added on them,
 * and no other claim shares a byte with them. Claims and devices are checked
 * against each other under one lock. */
struct store_claim;
struct byte_range;
/* Claim [R[i].offset, R[i].offset+R[i].len) for each of the N_R ranges of the
 * store with ids IDS (N of them), all or none, for OWNER. -EBUSY when a
 * device's store shares a byte (*DEV, if DEV is not NULL, gets a reference on
 * it), -EEXIST when another claim does. */
int registry_claim(struct registry *reg, const struct store_id *ids, size_t n, const struct byte_range *r,
		   size_t n_r, const void *owner, struct store_claim **claim, struct device **dev);
void registry_unclaim(struct registry *reg, struct store_claim *claim);
/* Every claim of OWNER. */
void registry_unclaim_owner(struct registry *reg, const void *owner);

/* A user removes device NAME: it is killed (device_kill: drained, every
 * filter detached, its requests fail from now on, even on connections that
 * hold it) and leaves the table. -ENOENT if there is none; -EBUSY if it is not
 * removable (device_set_removable) or one of its filters is held. */
int registry_remove(struct registry *reg, const char *name);
/* Its maker removes DEV (killed like any). -ENOENT if it is not in the table. */
int registry_remove_device(struct registry *reg, struct device *dev);
/* A new reference on device NAME, or NULL. */
struct device *registry_get(struct registry *reg, const char *name);
/* References on every device, in the order added; *N is the count. Free the
 * array after putting each. */
struct device **registry_list(struct registry *reg, size_t *n);

#endif
