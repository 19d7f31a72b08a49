/* The table of filters (see filters.h). */
#include "filters/filters.h"

#include <stddef.h>
#include <string.h>

#include "core/filter.h"

extern const struct filter_ops passthrough_filter_ops;
extern const struct filter_ops tracker_filter_ops;
extern const struct filter_ops faulty_filter_ops;

static const struct filter_ops *const known_filters[] = {
	&passthrough_filter_ops,
	&tracker_filter_ops,
	&faulty_filter_ops,
};

const struct filter_ops *filter_lookup(const char *name)
{
	for (size_t i = 0; i < sizeof(known_filters) / sizeof(known_filters[0]); i++)
		if (strcmp(known_filters[i]->name, name) == 0)
			return known_filters[i];
	return NULL;
}
