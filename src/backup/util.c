/* Helpers of the backup client: see util.h. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backup/util.h"

void bk_error(const char *fmt, ...)
{
	va_list ap;

	fputs("bdfilter-backup: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
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
