/* The devices a daemon serves, by name. Observers (the NBD server, later FUSE)
 * hear of every device added and removed, so that the control plane only deals
 * with devices and never with exports. */
#ifndef BDF_CORE_REGISTRY_H
#define BDF_CORE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

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
 * store (its file or block device) is another device's store already: two
 * devices on one store would each miss the other's writes (a tracker would
 * not see them, a snapshot would not copy before them). */
int registry_add(struct registry *reg, struct device *dev);
/* The device whose store is ST (a file or block device, from fstat), if
 * any: a new reference, or NULL. */
struct device *registry_find_store(struct registry *reg, const struct stat *st);
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
