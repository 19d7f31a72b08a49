/* Snapshots: blksnap's snapshot_create / add / append_storage / take /
 * wait_event / collect / destroy and the snapshotinfo of a device.
 * Every call returns 0 or a negative errno with a message in ERR:
 * -ESRCH unknown snapshot, -ENODEV unknown device, -ENOENT no tracker on the
 * device, -EBUSY device already in a snapshot, -EALREADY already taken. */
#ifndef BDF_BLKSNAP_SNAPSHOT_H
#define BDF_BLKSNAP_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uuid/uuid.h>

struct blksnap;
struct device;
struct event;
struct sector_range;

/* DEVS may be empty; GROW_PATH (NULL: none) makes the storage grow itself up
 * to GROW_LIMIT bytes. */
int snapshot_create(struct blksnap *bs, const char *const *devs, size_t n, const char *grow_path,
		    uint64_t grow_limit, uuid_t id, char *err, size_t errlen);
int snapshot_add(struct blksnap *bs, const uuid_t id, const char *dev, char *err, size_t errlen);
int snapshot_append_storage(struct blksnap *bs, const uuid_t id, const char *path,
			    const struct sector_range *r, size_t n, char *err, size_t errlen);
/* One instant for every device: all are drained, switched, resumed together. */
int snapshot_take(struct blksnap *bs, const uuid_t id, char *err, size_t errlen);
/* References on the devices of snapshot ID, in the order added (a malloc'd
 * array in *DEVS; put each). -ESRCH if there is no such snapshot. */
int snapshot_devices(struct blksnap *bs, const uuid_t id, struct device ***devs, size_t *n);
int snapshot_destroy(struct blksnap *bs, const uuid_t id, char *err, size_t errlen);
/* The ids (malloc'd array in *IDS, *N of them). */
int snapshot_collect(struct blksnap *bs, uuid_t **ids, size_t *n);
/* -ETIMEDOUT, -ESRCH (unknown or destroyed while waiting), or 0 and *EV. */
int snapshot_wait_event(struct blksnap *bs, const uuid_t id, uint32_t timeout_ms, struct event *ev);

struct snapshot_info {
	int error_code;
	char image[256]; /* "" until taken */
	bool in_snapshot;
	uuid_t id;
	uint64_t chunks_copied;
	uint64_t storage_capacity, storage_used; /* bytes */
};
int snapshot_device_info(struct blksnap *bs, const char *dev, struct snapshot_info *info, char *err,
			 size_t errlen);

#endif
