/* What blksnap keeps as module state, per daemon: the parameters (and, as they
 * come, the snapshots). Filters get it as their attach context. */
#ifndef BDF_FILTERS_BLKSNAP_H
#define BDF_FILTERS_BLKSNAP_H

#include "filters/params.h"

#define BLKSNAP_VERSION_MAJOR 2
#define BLKSNAP_VERSION_MINOR 0
#define BLKSNAP_VERSION_REVISION 0
#define BLKSNAP_VERSION_BUILD 0

struct blksnap {
	struct params params;
};

#endif
