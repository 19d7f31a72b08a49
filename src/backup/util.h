/* Small helpers the backup client's files share: its one line of error on
 * stderr, formatted strings, a clock for the summaries, and JSON fields. */
#ifndef BDF_BACKUP_UTIL_H
#define BDF_BACKUP_UTIL_H

#include <stdarg.h>
#include <stdint.h>

/* "bdfilter-backup: MESSAGE" on stderr. */
void bk_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A new formatted string, or NULL when out of memory. */
char *bk_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *bk_vformat(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Seconds on the monotonic clock. */
double bk_seconds(void);

struct json_object;
/* A string field of O, or NULL if absent or not a string. */
const char *bk_json_str(struct json_object *o, const char *key);
/* An integer field of O that is >= 0, or -1 if absent, null, not an
 * integer, negative or out of range. */
int64_t bk_json_uint(struct json_object *o, const char *key);

#endif
