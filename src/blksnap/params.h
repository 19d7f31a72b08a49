/* blksnap's nine module parameters, as daemon parameters with the same names,
 * defaults and start-up fix-ups (blksnap's parameters_init). */
#ifndef BDF_BLKSNAP_PARAMS_H
#define BDF_BLKSNAP_PARAMS_H

#include <stddef.h>
#include <stdint.h>

struct params {
	unsigned tracking_block_minimum_shift;
	unsigned tracking_block_maximum_count;
	unsigned tracking_block_maximum_shift;
	unsigned chunk_minimum_shift;
	unsigned chunk_maximum_count_shift;
	unsigned chunk_maximum_shift;
	unsigned chunk_maximum_in_queue;
	unsigned free_diff_buffer_pool_size;
	unsigned diff_storage_minimum; /* sectors */
};

void params_defaults(struct params *p);
/* Set NAME=VALUE; -ENOENT for an unknown name, -EINVAL for a bad value
 * (with a message in ERR). */
int params_set(struct params *p, const char *name, const char *value, char *err, size_t errlen);
/* blksnap's fix-ups: maximum shifts at least the minimum ones, and so on.
 * Calls WARN(msg) for each value it changes (may be NULL). */
void params_fixup(struct params *p, void (*warn)(const char *msg));

/* Name and value of parameter I (0..params_count()-1). */
size_t params_count(void);
const char *params_name(size_t i);
unsigned params_value(const struct params *p, size_t i);

#endif
