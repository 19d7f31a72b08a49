/* The commands table: one entry per control command, shared by the daemon's
 * dispatcher (which validates arguments against it) and the CLI (which parses
 * argv and prints help from it). Names and short options are blksnap's. */
#ifndef BDF_CONTROL_COMMANDS_H
#define BDF_CONTROL_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

enum command_id {
	CMD_VERSION,
	CMD_DEVICE_ADD,
	CMD_DEVICE_REMOVE,
	CMD_DEVICE_RESIZE,
	CMD_DEVICE_LIST,
	CMD_ATTACH,
	CMD_DETACH,
	CMD_CBTINFO,
	CMD_READCBTMAP,
	CMD_MARKDIRTYBLOCK,
	CMD_PARAMS,
	CMD_STATUS,
	CMD_SNAPSHOT_CREATE,
	CMD_SNAPSHOT_ADD,
	CMD_SNAPSHOT_APPENDSTORAGE,
	CMD_SNAPSHOT_TAKE,
	CMD_SNAPSHOT_INFO,
	CMD_SNAPSHOT_COLLECT,
	CMD_SNAPSHOT_WAITEVENT,
	CMD_SNAPSHOT_WATCHER,
	CMD_SNAPSHOT_DESTROY,
	CMD_DIRTYLOG_LIST,
	CMD_DIRTYLOG_STATUS,
	CMD_MIRROR_START,
	CMD_MIRROR_STATUS,
	CMD_MIRROR_SWITCH,
	CMD_MIRROR_STOP,
	CMD_FAULT_SET,
	CMD_FAULT_CLEAR,
	CMD_FAULT_STATUS,
	CMD_FAULT_POINT_SET,
	CMD_FAULT_POINT_CLEAR,
	CMD_FAULT_POINT_LIST,
	CMD_COUNT
};

enum arg_type {
	ARG_STRING,
	ARG_UINT,   /* unsigned 64-bit */
	ARG_FLAG,   /* present or not */
	ARG_RANGES, /* OFS:CNT in sectors, repeatable: an array of [ofs, cnt] */
	ARG_STRINGS, /* repeatable: an array of strings */
};

struct arg_def {
	char short_opt;
	const char *long_opt; /* also the JSON key */
	enum arg_type type;
	bool required;
	const char *meta; /* for help: "NAME", "FILE" */
	const char *help;
	bool cli_only; /* used by the CLI itself, never sent (readcbtmap -f FILE) */
};

#define MAX_ARGS 10

struct command_def {
	enum command_id id;
	const char *name;
	const char *summary;
	struct arg_def args[MAX_ARGS];
	bool cli_loop; /* the CLI repeats another command (snapshot_watcher) */
};

extern const struct command_def command_table[CMD_COUNT];

const struct command_def *command_find(const char *name);

#endif
