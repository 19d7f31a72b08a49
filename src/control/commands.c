/* The commands table (see commands.h). */
#include "control/commands.h"

#include <string.h>

#define DEV_ARG(req) { 'd', "device", ARG_STRING, req, "NAME", "device name" }

const struct command_def command_table[CMD_COUNT] = {
	[CMD_VERSION] = { CMD_VERSION, "version", "print the daemon's version", { { 0 } } },
	[CMD_DEVICE_ADD] = { CMD_DEVICE_ADD, "device_add", "serve a file or block device as a new device",
		{ DEV_ARG(true),
		  { 'f', "file", ARG_STRING, true, "PATH", "regular file or block device" },
		  { 'r', "ro", ARG_FLAG, false, NULL, "read-only" } } },
	[CMD_DEVICE_REMOVE] = { CMD_DEVICE_REMOVE, "device_remove", "stop serving a device",
		{ DEV_ARG(true) } },
	[CMD_DEVICE_LIST] = { CMD_DEVICE_LIST, "device_list", "list the devices", { { 0 } } },
	[CMD_ATTACH] = { CMD_ATTACH, "attach", "attach a filter (default: tracker) to a device, live",
		{ DEV_ARG(true),
		  { 'n', "filter", ARG_STRING, false, "FILTER", "filter name (tracker, passthrough)" } } },
	[CMD_DETACH] = { CMD_DETACH, "detach", "detach a filter (default: tracker) from a device, live",
		{ DEV_ARG(true),
		  { 'n', "filter", ARG_STRING, false, "FILTER", "filter name (tracker, passthrough)" } } },
	[CMD_CBTINFO] = { CMD_CBTINFO, "cbtinfo", "print the change tracker's state",
		{ DEV_ARG(true) } },
	[CMD_READCBTMAP] = { CMD_READCBTMAP, "readcbtmap", "write the CBT map, one byte per block, to FILE",
		{ DEV_ARG(true),
		  { 'f', "file", ARG_STRING, true, "FILE", "output file", true },
		  { 'o', "offset", ARG_UINT, false, "BYTES", "first byte of the map to read (default 0)" },
		  { 'l', "length", ARG_UINT, false, "BYTES", "bytes of the map per request (at most 1 MiB)" } } },
	[CMD_MARKDIRTYBLOCK] = { CMD_MARKDIRTYBLOCK, "markdirtyblock", "mark sector ranges as changed",
		{ DEV_ARG(true),
		  { 'r', "ranges", ARG_RANGES, true, "OFS:CNT", "sector range; repeatable" } } },
	[CMD_PARAMS] = { CMD_PARAMS, "params", "print the daemon's blksnap parameters", { { 0 } } },
	[CMD_STATUS] = { CMD_STATUS, "status", "print the daemon's state", { { 0 } } },
};

const struct command_def *command_find(const char *name)
{
	for (size_t i = 0; i < CMD_COUNT; i++)
		if (command_table[i].name && strcmp(command_table[i].name, name) == 0)
			return &command_table[i];
	return NULL;
}
