/* A progress bar on stderr, for a terminal only. All calls accept NULL. */
#ifndef BDF_BACKUP_PROGRESS_H
#define BDF_BACKUP_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress;

/* NULL (no bar) unless SHOW and stderr is a terminal. */
struct progress *progress_new(bool show, const char *what, uint64_t total);
void progress_update(struct progress *p, uint64_t done);
/* Ends the line and frees P. */
void progress_done(struct progress *p);

#endif
