/* Small helpers the backup client's files share: its one line of error on
 * stderr, formatted strings, and a clock for the summaries. */
#ifndef BDF_BACKUP_UTIL_H
#define BDF_BACKUP_UTIL_H

#include <stdarg.h>

/* "bdfilter-backup: MESSAGE" on stderr. */
void bk_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A new formatted string, or NULL when out of memory. */
char *bk_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *bk_vformat(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Seconds on the monotonic clock. */
double bk_seconds(void);

#endif
