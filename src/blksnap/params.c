/* blksnap's module parameters (see params.h). */
#include "blksnap/params.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct param_def {
	const char *name;
	size_t offset;
	unsigned def, min, max;
};

#define P(n, d, lo, hi) { #n, offsetof(struct params, n), d, lo, hi }
static const struct param_def defs[] = {
	P(tracking_block_minimum_shift, 16, 9, 40),
	P(tracking_block_maximum_count, 2097152, 1, UINT_MAX),
	P(tracking_block_maximum_shift, 26, 9, 40),
	P(chunk_minimum_shift, 18, 9, 40),
	P(chunk_maximum_count_shift, 40, 1, 64),
	P(chunk_maximum_shift, 26, 9, 40),
	P(chunk_maximum_in_queue, 16, 1, UINT_MAX),
	P(free_diff_buffer_pool_size, 128, 0, UINT_MAX),
	P(diff_storage_minimum, 2097152, 1, UINT_MAX),
};
#undef P

#define N_DEFS (sizeof(defs) / sizeof(defs[0]))

static unsigned *field(struct params *p, size_t i)
{
	return (unsigned *)((char *)p + defs[i].offset);
}

void params_defaults(struct params *p)
{
	for (size_t i = 0; i < N_DEFS; i++)
		*field(p, i) = defs[i].def;
}

int params_set(struct params *p, const char *name, const char *value, char *err, size_t errlen)
{
	for (size_t i = 0; i < N_DEFS; i++) {
		char *end;
		unsigned long long v;

		if (strcmp(defs[i].name, name) != 0)
			continue;
		errno = 0;
		v = strtoull(value, &end, 0);
		if (errno || end == value || *end || value[0] == '-' || v < defs[i].min || v > defs[i].max) {
			snprintf(err, errlen, "%s: '%s' is not a number from %u to %u", name, value,
				 defs[i].min, defs[i].max);
			return -EINVAL;
		}
		*field(p, i) = (unsigned)v;
		return 0;
	}
	snprintf(err, errlen, "unknown parameter '%s'", name);
	return -ENOENT;
}

void params_fixup(struct params *p, void (*warn)(const char *msg))
{
	char msg[128];

	if (p->tracking_block_maximum_shift < p->tracking_block_minimum_shift) {
		p->tracking_block_maximum_shift = p->tracking_block_minimum_shift;
		snprintf(msg, sizeof(msg), "fixed tracking_block_maximum_shift: %u", p->tracking_block_maximum_shift);
		if (warn)
			warn(msg);
	}
	if (p->chunk_maximum_shift < p->chunk_minimum_shift) {
		p->chunk_maximum_shift = p->chunk_minimum_shift;
		snprintf(msg, sizeof(msg), "fixed chunk_maximum_shift: %u", p->chunk_maximum_shift);
		if (warn)
			warn(msg);
	}
	/* Chunk numbers are unsigned long, as in blksnap (64 bits here). */
	if (p->chunk_maximum_count_shift > 64)
		p->chunk_maximum_count_shift = 64;
}

size_t params_count(void)
{
	return N_DEFS;
}

const char *params_name(size_t i)
{
	return i < N_DEFS ? defs[i].name : NULL;
}

unsigned params_value(const struct params *p, size_t i)
{
	return i < N_DEFS ? *(const unsigned *)((const char *)p + defs[i].offset) : 0;
}
