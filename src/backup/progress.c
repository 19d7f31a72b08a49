/* The progress bar: redrawn in place with \r, at most ten times a second. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "backup/progress.h"

struct progress {
	const char *what;
	uint64_t total;
	struct timespec start, last;
};

static double since(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

struct progress *progress_new(bool show, const char *what, uint64_t total)
{
	struct progress *p;

	if (!show || !isatty(STDERR_FILENO) || !(p = calloc(1, sizeof(*p))))
		return NULL;
	p->what = what;
	p->total = total;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	return p;
}

void progress_update(struct progress *p, uint64_t done)
{
	struct timespec now;
	double pct, secs;
	int bar;

	if (!p)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (done < p->total && since(&p->last, &now) < 0.1)
		return;
	p->last = now;
	pct = p->total ? 100.0 * (double)done / (double)p->total : 100.0;
	bar = (int)(pct / 100.0 * 30);
	secs = since(&p->start, &now);
	fprintf(stderr, "\r%-11s [%.*s%*s] %5.1f%% %8.1f MiB %7.1f MiB/s", p->what, bar,
		"##############################", 30 - bar, "", pct, (double)done / 1048576.0,
		secs > 0 ? (double)done / 1048576.0 / secs : 0.0);
}

void progress_done(struct progress *p)
{
	if (!p)
		return;
	fputc('\n', stderr);
	free(p);
}
