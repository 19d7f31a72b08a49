/* Helpers of the backup client: see util.h. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backup/util.h"

/* One write for the whole line: the serve and mount commands report from
 * several threads. */
void bk_error(const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "bdfilter-backup: %s\n", line);
}

char *bk_vformat(const char *fmt, va_list ap)
{
	char *s;

	return vasprintf(&s, fmt, ap) < 0 ? NULL : s;
}

char *bk_format(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = bk_vformat(fmt, ap);
	va_end(ap);
	return s;
}

double bk_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
