/* Control command handlers (see handlers.h). Arguments arrive checked against
 * the commands table: present when required, of the right JSON type. */
#include "control/handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base64.h"
#include "core/device.h"
#include "core/registry.h"
#include "filters/blksnap.h"
#include "filters/filters.h"
#include "filters/tracker.h"

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
	struct device *dev;
	int r;

	if (!device_name_valid(name)) {
		snprintf(msg, msglen, "invalid device name '%.255s'", name);
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
	if (r < 0)
		snprintf(msg, msglen, "cannot add device '%s': %s", name, strerror(-r));
	else {
		add_str(res, "device", name);
		add_u64(res, "size", device_size(dev));
	}
	device_put(dev);
	return r;
}

static int h_device_remove(void *opaque, json_object *args, json_object *res, char *msg, size_t msglen)
{
	struct control_ctx *ctx = opaque;
	const char *name = arg_str(args, "device", "");
	int r = registry_remove(ctx->reg, name);

	if (r == -ENOENT) {
		snprintf(msg, msglen, "no device '%.255s'", name);
		return -ENODEV;
	}
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
	struct device *dev = lookup_device(ctx, args, msg, msglen);
	int r;

	if (!dev)
		return -ENODEV;
	r = device_detach(dev, fname);
	if (r == -ENOENT)
		snprintf(msg, msglen, "%.64s is not attached to %s", fname, device_name(dev));
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
	return 0;
}

const control_handler control_handlers[CMD_COUNT] = {
	[CMD_VERSION] = h_version,
	[CMD_DEVICE_ADD] = h_device_add,
	[CMD_DEVICE_REMOVE] = h_device_remove,
	[CMD_DEVICE_LIST] = h_device_list,
	[CMD_ATTACH] = h_attach,
	[CMD_DETACH] = h_detach,
	[CMD_CBTINFO] = h_cbtinfo,
	[CMD_READCBTMAP] = h_readcbtmap,
	[CMD_MARKDIRTYBLOCK] = h_markdirtyblock,
	[CMD_PARAMS] = h_params,
	[CMD_STATUS] = h_status,
};
