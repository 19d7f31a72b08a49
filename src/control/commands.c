/* The commands table (see commands.h). */
#include "control/commands.h"

#include <string.h>

#define ARG(s, l, t, r, m, h) \
	{ .short_opt = s, .long_opt = l, .type = t, .required = r, .meta = m, .help = h }
#define DEV_ARG ARG('d', "device", ARG_STRING, true, "NAME", "device name")
#define FILTER_ARG ARG('n', "filter", ARG_STRING, false, "FILTER", "filter name (default tracker; or passthrough, faulty)")
#define ID_ARG ARG('i', "id", ARG_STRING, true, "UUID", "snapshot id")
/* The rule of a fault, shared by fault_set and fault_point_set. */
#define FAULT_ERROR_ARG ARG('e', "error", ARG_STRING, true, "ERR", "EIO, ENOSPC, or none (a delay only)")
#define FAULT_RATE_ARG ARG('p', "rate", ARG_STRING, false, "P", "chance per matching request, 0 to 1 (default 1)")
#define FAULT_COUNT_ARG ARG('c', "count", ARG_UINT, false, "N", "fire N times, then the rule is spent (default: no end)")
#define FAULT_DELAY_ARG ARG('w', "delay-ms", ARG_UINT, false, "MS", "delay a request that fires it by MS ms")
#define FAULT_SEED_ARG ARG('S', "seed", ARG_UINT, false, "S", "seed of the rule's PRNG (default 1)")
#define CMD(i, n, s, ...) [i] = { .id = i, .name = n, .summary = s, .args = { __VA_ARGS__ } }

const struct command_def command_table[CMD_COUNT] = {
	CMD(CMD_VERSION, "version", "print the daemon's version"),
	CMD(CMD_DEVICE_ADD, "device_add", "serve a file or block device as a new device",
	    DEV_ARG,
	    ARG('f', "file", ARG_STRING, true, "PATH", "regular file or block device"),
	    ARG('r', "ro", ARG_FLAG, false, NULL, "read-only")),
	CMD(CMD_DEVICE_REMOVE, "device_remove", "stop serving a device", DEV_ARG),
	CMD(CMD_DEVICE_RESIZE, "device_resize",
	    "change a device's size, or re-read its backing store's size",
	    DEV_ARG,
	    ARG('s', "size", ARG_UINT, false, "SIZE",
		"new size (K, M, G, T suffixes); a file is cut or grown to it (default: re-read)")),
	CMD(CMD_DEVICE_LIST, "device_list", "list the devices"),
	CMD(CMD_ATTACH, "attach", "attach a filter to a device, live", DEV_ARG, FILTER_ARG),
	CMD(CMD_DETACH, "detach", "detach a filter from a device, live", DEV_ARG, FILTER_ARG),
	CMD(CMD_CBTINFO, "cbtinfo", "print the change tracker's state", DEV_ARG),
	CMD(CMD_READCBTMAP, "readcbtmap", "write the CBT map, one byte per block, to FILE",
	    DEV_ARG,
	    { .short_opt = 'f', .long_opt = "file", .type = ARG_STRING, .required = true, .meta = "FILE",
	      .help = "output file", .cli_only = true },
	    ARG('o', "offset", ARG_UINT, false, "BYTES", "first byte of the map to read (default 0)"),
	    ARG('l', "length", ARG_UINT, false, "BYTES", "bytes of the map to read (default: to the end)")),
	CMD(CMD_MARKDIRTYBLOCK, "markdirtyblock", "mark sector ranges as changed",
	    DEV_ARG,
	    ARG('r', "ranges", ARG_RANGES, true, "OFS:CNT", "sector range; repeatable")),
	CMD(CMD_PARAMS, "params", "print the daemon's blksnap parameters"),
	CMD(CMD_STATUS, "status", "print the daemon's state"),
	CMD(CMD_SNAPSHOT_CREATE, "snapshot_create", "create a snapshot of devices; prints its id",
	    ARG('d', "device", ARG_STRINGS, false, "NAME", "device with a tracker; repeatable"),
	    ARG('f', "file", ARG_STRING, false, "PATH",
		"self-growing difference storage: a file, or a directory for a temporary file"),
	    ARG('l', "limit", ARG_UINT, false, "BYTES", "how far -f may grow (K, M, G, T suffixes)")),
	CMD(CMD_SNAPSHOT_ADD, "snapshot_add", "add a device to a snapshot not yet taken", ID_ARG, DEV_ARG),
	CMD(CMD_SNAPSHOT_APPENDSTORAGE, "snapshot_appendstorage",
	    "add a file or block device (whole, or sector ranges) to the difference storage",
	    ID_ARG,
	    ARG('f', "file", ARG_STRING, true, "PATH", "regular file or block device"),
	    ARG('r', "ranges", ARG_RANGES, false, "OFS:CNT", "sector range; repeatable (default: all)")),
	CMD(CMD_SNAPSHOT_TAKE, "snapshot_take",
	    "take the snapshot: one instant for all its devices, their mounted filesystems frozen",
	    ID_ARG,
	    ARG('n', "no-freeze", ARG_FLAG, false, NULL,
		"do not FIFREEZE the filesystems mounted from the devices' FUSE files")),
	CMD(CMD_SNAPSHOT_INFO, "snapshot_info", "print a device's snapshot state and image name", DEV_ARG),
	CMD(CMD_SNAPSHOT_COLLECT, "snapshot_collect", "list the snapshot ids"),
	CMD(CMD_SNAPSHOT_WAITEVENT, "snapshot_waitevent", "wait for a snapshot event",
	    ID_ARG, ARG('t', "timeout", ARG_UINT, false, "MS", "timeout in milliseconds (default 1000)")),
	[CMD_SNAPSHOT_WATCHER] = { .id = CMD_SNAPSHOT_WATCHER, .name = "snapshot_watcher",
		.summary = "print a snapshot's events until it is destroyed", .args = { ID_ARG }, .cli_loop = true },
	CMD(CMD_SNAPSHOT_DESTROY, "snapshot_destroy", "destroy a snapshot: its images and its storage", ID_ARG),
	CMD(CMD_DIRTYLOG_LIST, "dirtylog_list", "list the device-mapper dirty logs the daemon serves"),
	CMD(CMD_DIRTYLOG_STATUS, "dirtylog_status", "print a dirty log's state and its dm status lines",
	    ARG('u', "uuid", ARG_STRING, true, "UUID", "the log's uuid, as the mirror table names it")),
	CMD(CMD_MIRROR_START, "mirror_start",
	    "move a device to new storage, live: mirror its writes to TARGET and copy the rest there",
	    DEV_ARG,
	    ARG('f', "file", ARG_STRING, true, "TARGET", "file or block device, at least the device's size"),
	    ARG('g', "region-size", ARG_UINT, false, "BYTES", "region size, a power of two, 64K to 1G (default 1M)"),
	    ARG('r', "rate", ARG_UINT, false, "BYTES/S", "resync at most this fast (K, M, G suffixes; default: no limit)")),
	CMD(CMD_MIRROR_STATUS, "mirror_status", "print a mirror's state and progress", DEV_ARG),
	CMD(CMD_MIRROR_SWITCH, "mirror_switch",
	    "make the mirror's target the device's store (only when synced), clients connected", DEV_ARG),
	CMD(CMD_MIRROR_STOP, "mirror_stop", "abandon a move (the target is left as it is), or forget a switched one",
	    DEV_ARG),
	CMD(CMD_FAULT_SET, "fault_set", "add a rule to a device's faulty filter: fail, tear or delay requests",
	    DEV_ARG,
	    ARG('o', "op", ARG_STRING, true, "OP", "read, write, flush, trim, zero or any"),
	    FAULT_ERROR_ARG, FAULT_RATE_ARG,
	    ARG('r', "range", ARG_STRING, false, "OFS:LEN", "only requests overlapping these bytes"),
	    FAULT_COUNT_ARG,
	    ARG('s', "short", ARG_FLAG, false, NULL, "a write: its first half reaches the store, then the error"),
	    FAULT_DELAY_ARG, FAULT_SEED_ARG),
	CMD(CMD_FAULT_CLEAR, "fault_clear", "remove every rule of a device's faulty filter", DEV_ARG),
	CMD(CMD_FAULT_STATUS, "fault_status", "print a device's fault rules and the faults injected", DEV_ARG),
	CMD(CMD_FAULT_POINT_SET, "fault_point_set", "add a rule to a fault point of the daemon",
	    ARG('P', "point", ARG_STRING, true, "NAME", "the point (see fault_point_list)"),
	    FAULT_ERROR_ARG, FAULT_RATE_ARG, FAULT_COUNT_ARG, FAULT_DELAY_ARG, FAULT_SEED_ARG),
	CMD(CMD_FAULT_POINT_CLEAR, "fault_point_clear", "remove the rules of a fault point, or of all",
	    ARG('P', "point", ARG_STRING, false, "NAME", "the point (default: every one)")),
	CMD(CMD_FAULT_POINT_LIST, "fault_point_list", "list the fault points, their rules and the faults injected"),
};

const struct command_def *command_find(const char *name)
{
	for (size_t i = 0; i < CMD_COUNT; i++)
		if (command_table[i].name && strcmp(command_table[i].name, name) == 0)
			return &command_table[i];
	return NULL;
}
