/* Control command handlers (see handlers.h). Arguments arrive checked against
 * the commands table: present when required, of the right JSON type. */
#include "control/handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/fault.h"
#include "common/fsfreeze.h"
#include "core/device.h"
#include "core/io.h"
#include "core/registry.h"
#include "core/store_id.h"
#include "blksnap/blksnap.h"
#include "blksnap/event_queue.h"
#include "blksnap/image.h"
#include "filters/filters.h"
#include "blksnap/snapshot.h"
#include "blksnap/tracker.h"
#include "dirtylog/dirty_log.h"
#include "dirtylog/ulog_server.h"
#include "filters/faulty.h"
#include "filters/mirror.h"

#define READCBTMAP_MAX (1u << 20) /* bytes of map per request */

static const char *arg_str(json_object *args, const char *key, const char *def)
{
	json_object *v;

	return args && json_object_object_get_ex(args, key, &v) ? json_object_get_string(v) : def;
}

static bool arg_flag(json_object *args, const char *key)
{
	json_object *v;

	return args && json_object_object_get_ex(args, key, &v) && json_object_get_boolean(v);
}

static uint64_t arg_u64(json_object *args, const char *key, uint64_t def)
{
	json_object *v;

	return args && json_object_object_get_ex(args, key, &v) ? json_object_get_uint64(v) : def;
}

static void add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

static void add_str(json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, json_object_new_string(v));
}

/* The device named by the "device" argument, or -ENODEV with a message. */
static struct device *lookup_device(struct control_ctx *ctx, json_object *args, char *msg, size_t msglen)
{
	const char *name = arg_str(args, "device", "");
	struct device *dev = registry_get(ctx->reg, name);

	if (!dev)
		snprintf(msg, msglen, "no device '%.255s'", name);
	return dev;
}

static int h_version(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	char v[32];

	snprintf(v, sizeof(v), "%d.%d.%d.%d", BLKSNAP_VERSION_MAJOR, BLKSNAP_VERSION_MINOR,
		 BLKSNAP_VERSION_REVISION, BLKSNAP_VERSION_BUILD);
	add_str(res, "version", v);
	add_str(res, "bdfilter", BDF_VERSION);
	return 0;
}

static int h_device_add(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	const char *name = arg_str(args, "device", ""), *path = arg_str(args, "file", "");
	struct store_id ids[STORE_IDS_MAX];
	struct device *dev, *other;
	size_t n;
	int r;

	if (!device_name_valid(name)) {
		snprintf(msg, msglen, "invalid device name '%.255s'", name);
		return -EINVAL;
	}
	if (image_name_reserved(name)) {
		snprintf(msg, msglen, "'%.255s': names ending in " IMAGE_SUFFIX " are kept for snapshot images", name);
		return -EINVAL;
	}
	dev = registry_get(ctx->reg, name);
	if (dev) {
		device_put(dev);
		snprintf(msg, msglen, "device '%s' exists", name);
		return -EEXIST;
	}
	r = device_open(name, path, arg_flag(args, "ro"), &dev);
	if (r < 0) {
		snprintf(msg, msglen, "%.255s: %s", path, strerror(-r));
		return r;
	}
	r = registry_add(ctx->reg, dev);
	if (r == -EBUSY && store_ids_of_path(path, ids, &n) == 0 &&
	    (other = registry_find_store(ctx->reg, ids, n, 0, UINT64_MAX))) {
		snprintf(msg, msglen, "%.255s is the store of device %s already", path, device_name(other));
		device_put(other);
	} else if (r == -EBUSY) {
		snprintf(msg, msglen, "%.255s is the store of another device already", path);
	} else if (r < 0) {
		snprintf(msg, msglen, "cannot add device '%s': %s", name, strerror(-r));
	} else {
		add_str(res, "device", name);
		add_u64(res, "size", device_size(dev));
	}
	device_put(dev);
	return r;
}

/* The map goes with the device, as in blksnap: the removal detaches its
 * filters (the tracker deletes its state file), and clients still connected
 * get errors from then on. */
static int h_device_remove(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	const char *name = arg_str(args, "device", "");
	struct device *dev = registry_get(ctx->reg, name);
	int r;

	if (!dev) {
		snprintf(msg, msglen, "no device '%.255s'", name);
		return -ENODEV;
	}
	r = registry_remove(ctx->reg, name);
	if (r == -ENOENT) {
		snprintf(msg, msglen, "no device '%.255s'", name);
		r = -ENODEV;
	} else if (r == -EBUSY && !device_removable(dev)) {
		snprintf(msg, msglen, "%s is a snapshot image; destroy its snapshot instead", name);
	} else if (r == -EBUSY) {
		snprintf(msg, msglen, "%s is part of a snapshot; destroy the snapshot first", name);
	} else if (r < 0) {
		snprintf(msg, msglen, "removing %s: %s", name, strerror(-r));
	}
	device_put(dev);
	return r;
}

static int h_device_resize(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	json_object *v;
	bool set = args && json_object_object_get_ex(args, "size", &v);
	uint64_t size = set ? arg_u64(args, "size", 0) : DEVICE_SIZE_PROBE, old = 0;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	int r;

	if (!dev)
		return -ENODEV;
	if (!device_removable(dev)) {
		snprintf(msg, msglen, "%s is a snapshot image: its size is its origin's at the take", device_name(dev));
		device_put(dev);
		return -EBUSY;
	}
	/* DEVICE_SIZE_PROBE is not a size anyone can ask for. A device whose
	 * tracker a snapshot holds is refused, under the drain. */
	r = set && size > INT64_MAX ? -EINVAL : device_resize(dev, size, &old);
	switch (r) {
	case 0:
		add_str(res, "device", device_name(dev));
		add_u64(res, "size", device_size(dev));
		add_u64(res, "old_size", old);
		break;
	case -EINVAL:
		if (set)
			snprintf(msg, msglen, "size %llu is not a whole number of %u-byte sectors, at least one",
				 (unsigned long long)size, BDF_SECTOR_SIZE);
		else
			snprintf(msg, msglen, "%s is now smaller than one %u-byte sector", device_path(dev),
				 BDF_SECTOR_SIZE);
		break;
	case -EPERM:
		snprintf(msg, msglen, "%s is read-only: its size can only be re-read (no -s)", device_name(dev));
		break;
	case -EOPNOTSUPP:
		snprintf(msg, msglen, "%s cannot be resized from here: resize a block device with its own tools, "
			 "then run device_resize without -s", device_name(dev));
		break;
	case -EBUSY:
		snprintf(msg, msglen, "%s is part of a snapshot; destroy the snapshot first", device_name(dev));
		break;
	case -ENODEV:
		snprintf(msg, msglen, "%s was removed", device_name(dev));
		break;
	default:
		snprintf(msg, msglen, "resizing %s: %s", device_name(dev), strerror(-r));
		break;
	}
	device_put(dev);
	return r;
}

static int h_device_list(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	json_object *arr = json_object_new_array();
	struct device **devs;
	size_t n;

	devs = registry_list(ctx->reg, &n);
	if (!devs) {
		json_object_put(arr);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_new_object(), *fl = json_object_new_array();
		const char *names[8];
		size_t nf = device_filter_names(devs[i], names, 8);

		add_str(o, "name", device_name(devs[i]));
		add_str(o, "path", device_path(devs[i]));
		add_u64(o, "size", device_size(devs[i]));
		json_object_object_add(o, "readonly", json_object_new_boolean(device_readonly(devs[i])));
		for (size_t k = 0; k < nf; k++)
			json_object_array_add(fl, json_object_new_string(names[k]));
		json_object_object_add(o, "filters", fl);
		json_object_array_add(arr, o);
		device_put(devs[i]);
	}
	free(devs);
	json_object_object_add(res, "devices", arr);
	return 0;
}

static int h_attach(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	const char *fname = arg_str(args, "filter", "tracker");
	const struct filter_ops *ops = filter_lookup(fname);
	struct device *dev;
	int r;

	if (!ops) {
		snprintf(msg, msglen, "no filter called '%.64s'", fname);
		return -EINVAL;
	}
	dev = lookup_device(ctx, args, msg, msglen);
	if (!dev)
		return -ENODEV;
	r = device_attach(dev, ops, ctx->bs);
	if (r == -EALREADY)
		snprintf(msg, msglen, "%s is already attached to %s", fname, device_name(dev));
	device_put(dev);
	return r;
}

static int h_detach(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	const char *fname = arg_str(args, "filter", "tracker");
	const struct filter_ops *ops = filter_lookup(fname);
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	int r;

	if (!dev)
		return -ENODEV;
	/* Whether it may go is decided under the drain, with the detach. */
	r = ops ? device_detach(dev, ops) : -ENOENT;
	if (r == -ENOENT)
		snprintf(msg, msglen, "%.64s is not attached to %s", fname, device_name(dev));
	else if (r == -EBUSY)
		snprintf(msg, msglen, "%s is part of a snapshot; destroy the snapshot first", device_name(dev));
	device_put(dev);
	return r;
}

static int no_tracker(struct device *dev, char *msg, size_t msglen)
{
	snprintf(msg, msglen, "no tracker is attached to %s", device_name(dev));
	return -ENOENT;
}

static int h_cbtinfo(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	struct cbt_info info;
	char uuid[37];
	int r;

	if (!dev)
		return -ENODEV;
	r = tracker_cbtinfo(dev, &info);
	if (r == -ENOENT)
		r = no_tracker(dev, msg, msglen);
	device_put(dev);
	if (r < 0)
		return r;
	uuid_unparse_lower(info.generation_id, uuid);
	add_u64(res, "block_size", info.block_size);
	add_u64(res, "device_capacity", info.device_capacity);
	add_u64(res, "block_count", info.block_count);
	add_str(res, "generation_id", uuid);
	add_u64(res, "changes_number", info.changes_number);
	json_object_object_add(res, "corrupted", json_object_new_boolean(info.corrupted));
	if (info.wil) {
		add_u64(res, "wil_region_size", info.wil_region_size);
		add_u64(res, "wil_regions", info.wil_regions);
		add_u64(res, "wil_dirty", info.wil_dirty);
		add_u64(res, "wil_writes", info.wil_writes);
		add_u64(res, "wil_flushes", info.wil_flushes);
	}
	return 0;
}

static int h_readcbtmap(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	uint64_t offset = arg_u64(args, "offset", 0), len = arg_u64(args, "length", READCBTMAP_MAX), got;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	uint8_t *buf;
	char *b64;
	int r;

	if (!dev)
		return -ENODEV;
	if (len > READCBTMAP_MAX)
		len = READCBTMAP_MAX;
	buf = malloc(len ? len : 1);
	if (!buf) {
		device_put(dev);
		return -ENOMEM;
	}
	r = tracker_read_cbtmap(dev, offset, len, buf, &got);
	if (r == -ENOENT)
		r = no_tracker(dev, msg, msglen);
	else if (r == -EINVAL)
		snprintf(msg, msglen, "offset %llu is beyond the map", (unsigned long long)offset);
	device_put(dev);
	if (r < 0) {
		free(buf);
		return r;
	}
	b64 = base64_encode(buf, got);
	free(buf);
	if (!b64)
		return -ENOMEM;
	add_u64(res, "offset", offset);
	add_u64(res, "length", got);
	add_str(res, "data", b64);
	free(b64);
	return 0;
}

static int h_markdirtyblock(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	json_object *ranges;
	struct sector_range *r;
	struct device *dev;
	size_t n;
	int err;

	json_object_object_get_ex(args, "ranges", &ranges);
	n = json_object_array_length(ranges);
	r = calloc(n, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_object *pair = json_object_array_get_idx(ranges, i);

		r[i].offset = json_object_get_uint64(json_object_array_get_idx(pair, 0));
		r[i].count = json_object_get_uint64(json_object_array_get_idx(pair, 1));
	}
	dev = lookup_device(ctx, args, msg, msglen);
	if (!dev) {
		free(r);
		return -ENODEV;
	}
	err = tracker_mark_dirty(dev, r, n);
	if (err == -ENOENT)
		err = no_tracker(dev, msg, msglen);
	else if (err == -EINVAL)
		snprintf(msg, msglen, "a range lies beyond the end of %s", device_name(dev));
	device_put(dev);
	free(r);
	return err;
}

static int h_params(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;

	for (size_t i = 0; i < params_count(); i++)
		add_u64(res, params_name(i), params_value(&ctx->bs->params, i));
	return 0;
}

static int h_status(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct device **devs;
	size_t n = 0;

	devs = registry_list(ctx->reg, &n);
	if (devs) {
		for (size_t i = 0; i < n; i++)
			device_put(devs[i]);
		free(devs);
	}
	add_str(res, "version", BDF_VERSION);
	add_u64(res, "pid", (uint64_t)getpid());
	add_u64(res, "uptime_s", (uint64_t)(time(NULL) - ctx->started));
	add_u64(res, "devices", n);
	add_str(res, "state_dir", ctx->state_dir ? ctx->state_dir : "");
	/* Where NBD clients reach the exports: a URI per listener, for
	 * bdfilter-backup run and for people. */
	json_object *uris = json_object_new_array();

	for (size_t i = 0; i < ctx->n_nbd_uris; i++)
		json_object_array_add(uris, json_object_new_string(ctx->nbd_uris[i]));
	json_object_object_add(res, "nbd_uri", uris);
	return 0;
}

static int parse_id(json_object *args, uuid_t id, char *msg, size_t msglen)
{
	const char *s = arg_str(args, "id", "");

	if (uuid_parse(s, id) < 0) {
		snprintf(msg, msglen, "'%.64s' is not a snapshot id (a UUID)", s);
		return -EINVAL;
	}
	return 0;
}

static int h_snapshot_create(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	const char *grow = arg_str(args, "file", NULL);
	uint64_t limit = arg_u64(args, "limit", 0);
	json_object *devs = NULL;
	const char **names;
	char u[37];
	uuid_t id;
	size_t n = 0;
	int r;

	if ((grow != NULL) != (limit != 0)) {
		snprintf(msg, msglen, "-f PATH and -l LIMIT go together");
		return -EINVAL;
	}
	if (args)
		json_object_object_get_ex(args, "device", &devs);
	n = devs ? json_object_array_length(devs) : 0;
	names = calloc(n ? n : 1, sizeof(*names));
	if (!names)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		names[i] = json_object_get_string(json_object_array_get_idx(devs, i));
	r = snapshot_create(ctx->bs, names, n, grow, limit, id, msg, msglen);
	free(names);
	if (r < 0)
		return r;
	uuid_unparse_lower(id, u);
	add_str(res, "id", u);
	return 0;
}

static int h_snapshot_add(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	uuid_t id;
	int r = parse_id(args, id, msg, msglen);

	return r < 0 ? r : snapshot_add(ctx->bs, id, arg_str(args, "device", ""), msg, msglen);
}

static int h_snapshot_appendstorage(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	json_object *ranges = NULL;
	struct sector_range *rg;
	size_t n;
	uuid_t id;
	int r = parse_id(args, id, msg, msglen);

	if (r < 0)
		return r;
	json_object_object_get_ex(args, "ranges", &ranges);
	n = ranges ? json_object_array_length(ranges) : 0;
	rg = calloc(n ? n : 1, sizeof(*rg));
	if (!rg)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_object *pair = json_object_array_get_idx(ranges, i);

		rg[i].offset = json_object_get_uint64(json_object_array_get_idx(pair, 0));
		rg[i].count = json_object_get_uint64(json_object_array_get_idx(pair, 1));
	}
	r = snapshot_append_storage(ctx->bs, id, arg_str(args, "file", ""), rg, n, msg, msglen);
	free(rg);
	return r;
}

/* Find the filesystems mounted (through loop devices) from the FUSE files of
 * snapshot ID's devices. Nothing to find without a FUSE export or snapshot. */
static int find_frozen_candidates(struct control_ctx *ctx, const uuid_t id, struct fsfreeze *ff)
{
	struct device **devs;
	char **paths;
	size_t n = 0;
	int r;

	if (!ctx->fuse_dir)
		return 0;
	r = snapshot_devices(ctx->bs, id, &devs, &n);
	if (r == -ESRCH)
		return 0; /* snapshot_take reports the unknown id */
	if (r < 0)
		return r;
	paths = calloc(n ? n : 1, sizeof(*paths));
	r = paths ? 0 : -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (r == 0 && asprintf(&paths[i], "%s/%s", ctx->fuse_dir, device_name(devs[i])) < 0) {
			paths[i] = NULL;
			r = -ENOMEM;
		}
		device_put(devs[i]);
	}
	free(devs);
	if (r == 0)
		r = fsfreeze_find(ff, FSFREEZE_SYS_BLOCK, FSFREEZE_MOUNTINFO, (const char *const *)paths, n);
	for (size_t i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
	return r;
}

/* The freeze runs here, on a control thread, before the take drains the
 * devices: freezing writes the filesystems' dirty data through the loop
 * devices and the FUSE workers into the devices, which must be running. */
static int h_snapshot_take(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct fsfreeze ff = { NULL, 0 };
	size_t frozen = 0;
	uuid_t id;
	int r = parse_id(args, id, msg, msglen);

	if (r < 0)
		return r;
	if (!arg_flag(args, "no-freeze")) {
		r = find_frozen_candidates(ctx, id, &ff);
		if (r < 0) {
			snprintf(msg, msglen, "cannot look for filesystems to freeze: %s", strerror(-r));
			fsfreeze_free(&ff);
			return r;
		}
		frozen = fsfreeze_freeze(&ff);
	}
	r = snapshot_take(ctx->bs, id, msg, msglen);
	fsfreeze_free(&ff); /* thaws, whatever the take did */
	if (r == 0)
		add_u64(res, "frozen", frozen);
	return r;
}

static int h_snapshot_destroy(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	uuid_t id;
	int r = parse_id(args, id, msg, msglen);

	return r < 0 ? r : snapshot_destroy(ctx->bs, id, msg, msglen);
}

static int h_snapshot_info(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct snapshot_info info;
	char u[37] = "";
	int r = snapshot_device_info(ctx->bs, arg_str(args, "device", ""), &info, msg, msglen);

	if (r < 0)
		return r;
	json_object_object_add(res, "error_code", json_object_new_int(info.error_code));
	add_str(res, "image", info.image);
	if (info.in_snapshot)
		uuid_unparse_lower(info.id, u);
	add_str(res, "id", u);
	add_u64(res, "chunks_copied", info.chunks_copied);
	add_u64(res, "storage_capacity", info.storage_capacity);
	add_u64(res, "storage_used", info.storage_used);
	return 0;
}

static int h_snapshot_collect(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	json_object *arr = json_object_new_array();
	uuid_t *ids;
	size_t n;
	int r = snapshot_collect(ctx->bs, &ids, &n);

	if (r < 0) {
		json_object_put(arr);
		return r;
	}
	for (size_t i = 0; i < n; i++) {
		char u[37];

		uuid_unparse_lower(ids[i], u);
		json_object_array_add(arr, json_object_new_string(u));
	}
	free(ids);
	json_object_object_add(res, "id", arr);
	return 0;
}

static int h_snapshot_waitevent(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	uint64_t timeout = arg_u64(args, "timeout", 1000);
	struct event ev;
	uuid_t id;
	int r = parse_id(args, id, msg, msglen);

	if (r < 0)
		return r;
	if (timeout > UINT32_MAX) {
		snprintf(msg, msglen, "timeout over %u ms", UINT32_MAX);
		return -EINVAL;
	}
	/* In slices, so that a daemon shutting down is not held by a long wait. */
	do {
		uint32_t slice = timeout < 200 ? (uint32_t)timeout : 200;

		r = snapshot_wait_event(ctx->bs, id, slice, &ev);
		timeout -= slice;
	} while (r == -ETIMEDOUT && timeout > 0 && !atomic_load(&ctx->stopping));
	if (r == -ETIMEDOUT) {
		add_str(res, "result", "timeout");
		return 0;
	}
	if (r == -ESRCH) {
		snprintf(msg, msglen, "no snapshot %s", arg_str(args, "id", ""));
		return r;
	}
	if (r < 0)
		return r;
	add_str(res, "result", "ok");
	json_object_object_add(res, "time", json_object_new_int64(ev.time_ns));
	if (ev.code == EVENT_LOW_FREE_SPACE) {
		add_str(res, "event", "low_free_space");
		add_u64(res, "requested_nr_sect", ev.low_free_space.requested_nr_sect);
	} else {
		add_str(res, "event", "corrupted");
		add_u64(res, "dev_id_mj", ev.corrupted.dev_id_mj);
		add_u64(res, "dev_id_mn", ev.corrupted.dev_id_mn);
		json_object_object_add(res, "err_code", json_object_new_int(ev.corrupted.err_code));
		add_str(res, "device", ev.corrupted.device);
	}
	return 0;
}

static const char *const dirty_log_state_names[] = {
	[DIRTY_LOG_CONSTRUCTED] = "constructed",
	[DIRTY_LOG_RESUMED] = "resumed",
	[DIRTY_LOG_SUSPENDED] = "suspended",
};

static void add_dirty_log(json_object *o, const char *uuid, uint64_t luid, const char *ctr, struct dirty_log *log)
{
	struct dirty_log_stats st;

	dirty_log_get_stats(log, &st);
	add_str(o, "uuid", uuid);
	add_u64(o, "luid", luid);
	add_str(o, "table", ctr);
	add_str(o, "state", dirty_log_state_names[st.state]);
	add_u64(o, "region_size", (uint64_t)st.region_sectors << 9);
	add_u64(o, "regions", st.region_count);
	add_u64(o, "in_sync", st.sync_count);
	add_u64(o, "dirty", st.dirty_count);
	add_u64(o, "disk_writes", st.writes);
	add_u64(o, "disk_flushes", st.flushes);
	json_object_object_add(o, "failed", json_object_new_boolean(st.failed));
}

static void list_one(void *opaque, const char *uuid, uint64_t luid, const char *ctr, struct dirty_log *log)
{
	json_object *o = json_object_new_object();

	add_dirty_log(o, uuid, luid, ctr, log);
	json_object_array_add(opaque, o);
}

static int h_dirtylog_list(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	json_object *arr = json_object_new_array();

	if (ctx->ulog)
		ulog_server_visit(ctx->ulog, list_one, arr);
	json_object_object_add(res, "logs", arr);
	return 0;
}

struct status_visit {
	const char *uuid;
	json_object *res;
	unsigned found;
};

static void status_one(void *opaque, const char *uuid, uint64_t luid, const char *ctr, struct dirty_log *log)
{
	struct status_visit *v = opaque;
	char line[512];

	/* Two tables (live and inactive) may share a uuid: the first one. */
	if (strcmp(uuid, v->uuid) != 0 || v->found++)
		return;
	add_dirty_log(v->res, uuid, luid, ctr, log);
	add_str(v->res, "status_info", dirty_log_status_info(log, line, sizeof(line)) >= 0 ? line : "");
	add_str(v->res, "status_table", dirty_log_status_table(log, line, sizeof(line)) >= 0 ? line : "");
}

static int h_dirtylog_status(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct status_visit v = { .uuid = arg_str(args, "uuid", ""), .res = res };

	if (ctx->ulog)
		ulog_server_visit(ctx->ulog, status_one, &v);
	if (!v.found) {
		snprintf(msg, msglen, "no dirty log with uuid '%.128s'%s", v.uuid,
			 ctx->ulog ? "" : " (the daemon serves none: start it with --dm-ulog or --dm-ulog-listen)");
		return -ENOENT;
	}
	return 0;
}

static int h_mirror_start(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	struct mirror_args a = {
		.target = arg_str(args, "file", ""), .region_size = arg_u64(args, "region-size", 0),
		.rate = arg_u64(args, "rate", 0), .state_dir = ctx->state_dir, .reg = ctx->reg,
	};
	int r;

	if (!dev)
		return -ENODEV;
	if (device_readonly(dev)) {
		snprintf(msg, msglen, "%s is read-only: nothing to move writes for", device_name(dev));
		r = -EPERM;
	} else {
		r = mirror_start(dev, &a, msg, msglen);
	}
	device_put(dev);
	return r;
}

static const char *const mirror_state_names[] = {
	[MIRROR_SYNCING] = "syncing",
	[MIRROR_SYNCED] = "synced",
	[MIRROR_SWITCHED] = "switched",
	[MIRROR_FAILED] = "failed",
};

static int h_mirror_status(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	struct mirror_status *st;
	char pct[16];
	int r;

	if (!dev)
		return -ENODEV;
	st = calloc(1, sizeof(*st));
	r = st ? mirror_get_status(dev, st) : -ENOMEM;
	if (r == -ENOENT)
		snprintf(msg, msglen, "%s is not being mirrored", device_name(dev));
	device_put(dev);
	if (r == 0) {
		add_str(res, "state", mirror_state_names[st->state]);
		add_str(res, "target", st->target);
		add_u64(res, "region_size", st->region_size);
		add_u64(res, "regions", st->regions);
		add_u64(res, "in_sync", st->in_sync);
		snprintf(pct, sizeof(pct), "%.1f", st->regions ? 100.0 * (double)st->in_sync / (double)st->regions : 100.0);
		add_str(res, "progress", pct);
		add_u64(res, "copied", st->copied);
		add_u64(res, "rate", st->rate);
		if (st->state == MIRROR_FAILED)
			add_str(res, "error", strerror(st->error));
	}
	free(st);
	return r;
}

static int h_mirror_switch(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	int r;

	if (!dev)
		return -ENODEV;
	r = mirror_switch(dev, ctx->reg, msg, msglen);
	if (r == 0)
		add_str(res, "path", device_path(dev));
	device_put(dev);
	return r;
}

static int h_mirror_stop(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	int r;

	if (!dev)
		return -ENODEV;
	r = mirror_stop(dev, ctx->reg);
	if (r == -ENOENT)
		snprintf(msg, msglen, "%s is not being mirrored", device_name(dev));
	device_put(dev);
	return r;
}

#define FAULT_DELAY_MAX_MS 60000u /* a request held longer looks like a hung daemon */

/* The rule of fault_set or fault_point_set (whose table has no op, range
 * or short: those are left at "any request, whole"). */
static int parse_fault_spec(json_object *args, struct fault_spec *s, char *msg, size_t msglen)
{
	const char *op = arg_str(args, "op", NULL), *error = arg_str(args, "error", "");
	const char *rate = arg_str(args, "rate", NULL), *range = arg_str(args, "range", NULL);
	json_object *v;

	memset(s, 0, sizeof(*s));
	s->ops = FAULT_OP_ANY;
	s->rate = 1.0;
	s->seed = arg_u64(args, "seed", 1);
	s->count = arg_u64(args, "count", 0);
	s->short_write = arg_flag(args, "short");
	if (op && fault_op_parse(op, &s->ops) < 0) {
		snprintf(msg, msglen, "op '%.32s': expected read, write, flush, trim, zero or any", op);
		return -EINVAL;
	}
	if (fault_error_parse(error, &s->error) < 0) {
		snprintf(msg, msglen, "error '%.32s': expected EIO, ENOSPC or none", error);
		return -EINVAL;
	}
	if (rate && fault_rate_parse(rate, &s->rate) < 0) {
		snprintf(msg, msglen, "rate '%.32s': expected a chance from 0 to 1", rate);
		return -EINVAL;
	}
	if (range && fault_range_parse(range, &s->offset, &s->length) < 0) {
		snprintf(msg, msglen, "range '%.64s': expected OFFSET:LENGTH in bytes, LENGTH at least 1", range);
		return -EINVAL;
	}
	if (json_object_object_get_ex(args, "count", &v) && s->count == 0) {
		snprintf(msg, msglen, "count 0 would never fire (leave it out for no end)");
		return -EINVAL;
	}
	if (arg_u64(args, "delay-ms", 0) > FAULT_DELAY_MAX_MS) {
		snprintf(msg, msglen, "delay-ms: at most %u", FAULT_DELAY_MAX_MS);
		return -EINVAL;
	}
	s->delay_ms = (uint32_t)arg_u64(args, "delay-ms", 0);
	return fault_spec_check(s, msg, msglen);
}

static json_object *fault_rule_json(const struct fault_rule_status *st, bool device)
{
	json_object *o = json_object_new_object();
	const struct fault_spec *s = &st->spec;

	if (device)
		add_str(o, "op", fault_op_name(s->ops));
	add_str(o, "error", fault_error_name(s->error));
	json_object_object_add(o, "rate", json_object_new_double(s->rate));
	if (device && s->length) {
		char r[48];

		snprintf(r, sizeof(r), "%llu:%llu", (unsigned long long)s->offset, (unsigned long long)s->length);
		add_str(o, "range", r);
	}
	add_u64(o, "count", s->count);
	if (device)
		json_object_object_add(o, "short", json_object_new_boolean(s->short_write));
	add_u64(o, "delay_ms", s->delay_ms);
	add_u64(o, "seed", s->seed);
	add_u64(o, "matched", st->matched);
	add_u64(o, "fired", st->fired);
	json_object_object_add(o, "spent", json_object_new_boolean(st->spent));
	return o;
}

static int no_faulty(struct device *dev, char *msg, size_t msglen)
{
	snprintf(msg, msglen, "the faulty filter is not attached to %s (bdfilter attach -d %s -n faulty)",
		 device_name(dev), device_name(dev));
	return -ENOENT;
}

static int h_fault_set(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct fault_spec spec;
	struct device *dev;
	int r = parse_fault_spec(args, &spec, msg, msglen);

	if (r < 0)
		return r;
	dev = lookup_device(ctx, args, msg, msglen);
	if (!dev)
		return -ENODEV;
	r = faulty_add_rule(dev, &spec);
	if (r == -ENOENT)
		r = no_faulty(dev, msg, msglen);
	else if (r == -ENOSPC)
		snprintf(msg, msglen, "%s has %d rules already", device_name(dev), FAULT_MAX_RULES);
	else if (r == 0)
		add_str(res, "device", device_name(dev));
	device_put(dev);
	return r;
}

static int h_fault_clear(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	int r;

	if (!dev)
		return -ENODEV;
	r = faulty_clear(dev);
	if (r == -ENOENT)
		r = no_faulty(dev, msg, msglen);
	device_put(dev);
	return r;
}

static int h_fault_status(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	struct fault_rule_status st[FAULT_MAX_RULES];
	uint64_t injected;
	json_object *arr;
	size_t n;
	int r;

	if (!dev)
		return -ENODEV;
	r = faulty_status(dev, st, FAULT_MAX_RULES, &n, &injected);
	if (r == -ENOENT)
		r = no_faulty(dev, msg, msglen);
	if (r == 0) {
		add_str(res, "device", device_name(dev));
		add_u64(res, "injected", injected);
		arr = json_object_new_array();
		for (size_t i = 0; i < n; i++)
			json_object_array_add(arr, fault_rule_json(&st[i], true));
		json_object_object_add(res, "rules", arr);
	}
	device_put(dev);
	return r;
}

static int h_fault_point_set(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	const char *name = arg_str(args, "point", "");
	struct fault_spec spec;
	int r = parse_fault_spec(args, &spec, msg, msglen);

	if (r < 0)
		return r;
	r = fault_point_add(name, &spec);
	if (r == -ENOENT)
		snprintf(msg, msglen, "no fault point '%.64s' (see fault_point_list)", name);
	else if (r == -ENOSPC)
		snprintf(msg, msglen, "%s has %d rules already", name, FAULT_MAX_RULES);
	else if (r == 0)
		add_str(res, "point", name);
	return r;
}

static int h_fault_point_clear(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	const char *name = arg_str(args, "point", NULL);
	int r = fault_point_clear(name);

	if (r == -ENOENT)
		snprintf(msg, msglen, "no fault point '%.64s' (see fault_point_list)", name);
	return r;
}

static int h_fault_point_list(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	json_object *arr = json_object_new_array();

	for (size_t i = 0; i < fault_point_count(); i++) {
		struct fault_rule_status st[FAULT_MAX_RULES];
		json_object *o = json_object_new_object(), *rules = json_object_new_array();
		uint64_t injected;
		size_t n = fault_point_get(i, st, FAULT_MAX_RULES, &injected);

		add_str(o, "point", fault_point_name(i));
		add_str(o, "about", fault_point_about(i));
		add_u64(o, "injected", injected);
		for (size_t k = 0; k < n; k++)
			json_object_array_add(rules, fault_rule_json(&st[k], false));
		json_object_object_add(o, "rules", rules);
		json_object_array_add(arr, o);
	}
	json_object_object_add(res, "points", arr);
	return 0;
}

const control_handler control_handlers[CMD_COUNT] = {
	[CMD_SNAPSHOT_CREATE] = h_snapshot_create,
	[CMD_SNAPSHOT_ADD] = h_snapshot_add,
	[CMD_SNAPSHOT_APPENDSTORAGE] = h_snapshot_appendstorage,
	[CMD_SNAPSHOT_TAKE] = h_snapshot_take,
	[CMD_SNAPSHOT_INFO] = h_snapshot_info,
	[CMD_SNAPSHOT_COLLECT] = h_snapshot_collect,
	[CMD_SNAPSHOT_WAITEVENT] = h_snapshot_waitevent,
	[CMD_SNAPSHOT_DESTROY] = h_snapshot_destroy,
	[CMD_VERSION] = h_version,
	[CMD_DEVICE_ADD] = h_device_add,
	[CMD_DEVICE_REMOVE] = h_device_remove,
	[CMD_DEVICE_RESIZE] = h_device_resize,
	[CMD_DEVICE_LIST] = h_device_list,
	[CMD_ATTACH] = h_attach,
	[CMD_DETACH] = h_detach,
	[CMD_CBTINFO] = h_cbtinfo,
	[CMD_READCBTMAP] = h_readcbtmap,
	[CMD_MARKDIRTYBLOCK] = h_markdirtyblock,
	[CMD_PARAMS] = h_params,
	[CMD_STATUS] = h_status,
	[CMD_DIRTYLOG_LIST] = h_dirtylog_list,
	[CMD_DIRTYLOG_STATUS] = h_dirtylog_status,
	[CMD_MIRROR_START] = h_mirror_start,
	[CMD_MIRROR_STATUS] = h_mirror_status,
	[CMD_MIRROR_SWITCH] = h_mirror_switch,
	[CMD_MIRROR_STOP] = h_mirror_stop,
	[CMD_FAULT_SET] = h_fault_set,
	[CMD_FAULT_CLEAR] = h_fault_clear,
	[CMD_FAULT_STATUS] = h_fault_status,
	[CMD_FAULT_POINT_SET] = h_fault_point_set,
	[CMD_FAULT_POINT_CLEAR] = h_fault_point_clear,
	[CMD_FAULT_POINT_LIST] = h_fault_point_list,
};
