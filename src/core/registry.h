/* The devices a daemon serves, by name. Observers (the NBD server, later FUSE)
 * hear of every device added and removed, so that the control plane only deals
 * with devices and never with exports. */
#ifndef BDF_CORE_REGISTRY_H
#define BDF_CORE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

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
/* Removes (and releases) every device, newest first. */
void registry_free(struct registry *reg);

/* At most 4 observers; they are called in the order they were added. */
int registry_observe(struct registry *reg, const struct registry_observer *obs);

/* Takes a reference on DEV. -EEXIST if the name is taken. */
int registry_add(struct registry *reg, struct device *dev);
/* -ENOENT if there is no device NAME. */
int registry_remove(struct registry *reg, const char *name);
/* A new reference on device NAME, or NULL. */
struct device *registry_get(struct registry *reg, const char *name);
/* References on every device, in the order added; *N is the count. Free the
 * array after putting each. */
struct device **registry_list(struct registry *reg, size_t *n);

#endif
