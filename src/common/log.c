/* Logging to stderr (foreground) or syslog (daemonized). */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>

static enum log_level cur_level = LOG_LEVEL_INFO;
static bool to_syslog;
static const char *ident = "bdfilterd";

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

void log_set_level(enum log_level level)
{
	cur_level = level;
}

enum log_level log_get_level(void)
{
	return cur_level;
}

int log_parse_level(const char *s, enum log_level *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LOG_LEVEL_WARN;
		return 0;
	}
	return -1;
}

void log_set_ident(const char *name)
{
	ident = name;
}

void log_use_syslog(bool on)
{
	if (on && !to_syslog)
		openlog(ident, LOG_PID, LOG_DAEMON);
	to_syslog = on;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const int prio[] = {
		[LOG_LEVEL_ERROR] = LOG_ERR,
		[LOG_LEVEL_WARN] = LOG_WARNING,
		[LOG_LEVEL_INFO] = LOG_INFO,
		[LOG_LEVEL_DEBUG] = LOG_DEBUG,
	};
	char buf[1024];
	va_list ap;

	if (level > cur_level)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (to_syslog)
		syslog(prio[level], "%s", buf);
	else
		/* One fprintf per line keeps lines from different threads whole. */
		fprintf(stderr, "%s: %s: %s\n", ident, level_names[level], buf);
}
