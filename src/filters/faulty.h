/* faulty: a filter that fails, tears or delays the requests its rules pick
 * (common/fault.h), so that tests can show what clients and the layers
 * above see when the storage below fails. Off unless attached; with no rule
 * it passes everything through at the cost of one atomic load. */
#ifndef BDF_FILTERS_FAULTY_H
#define BDF_FILTERS_FAULTY_H

#include <stddef.h>
#include <stdint.h>

struct device;
struct fault_rule_status;
struct fault_spec;

extern const struct filter_ops faulty_filter_ops;

/* DEV's faulty filter: add a rule (as fault_rules_add), clear them, or read
 * them and the count of faults injected. -ENOENT if none is attached. */
int faulty_add_rule(struct device *dev, const struct fault_spec *spec);
int faulty_clear(struct device *dev);
int faulty_status(struct device *dev, struct fault_rule_status *out, size_t max, size_t *n, uint64_t *injected);

#endif
