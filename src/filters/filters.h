/* The filters this build has, by name. */
#ifndef BDF_FILTERS_FILTERS_H
#define BDF_FILTERS_FILTERS_H

struct filter_ops;

/* NULL if no filter is called NAME. */
const struct filter_ops *filter_lookup(const char *name);

#endif
