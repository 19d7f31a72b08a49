/* passthrough: a filter that implements every op by calling the layer below.
 * It proves the stack end to end (tests attach it live under load) and is the
 * template a new filter starts from. It counts what it forwards so tests can see
 * that requests really went through it: the count is logged at detach. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "common/log.h"
#include "core/device.h"
#include "core/filter.h"

struct passthrough {
	atomic_ullong requests;
};

static int pt_attach(struct filter *f, void *ctx)
{
	struct passthrough *pt;

	pt = calloc(1, sizeof(*pt));
	if (!pt)
		return -ENOMEM;
	atomic_init(&pt->requests, 0);
	f->priv = pt;
	return 0;
}

static int pt_detach(struct filter *f)
{
	struct passthrough *pt = f->priv;

	log_info("%s: passthrough forwarded %llu requests", device_name(f->dev),
		 (unsigned long long)atomic_load(&pt->requests));
	free(pt);
	f->priv = NULL;
	return 0;
}

static void pt_count(struct filter *f)
{
	struct passthrough *pt = f->priv;

	atomic_fetch_add_explicit(&pt->requests, 1, memory_order_relaxed);
}

static int pt_pread(struct filter *f, void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	pt_count(f);
	return filter_next_pread(f, buf, count, offset, flags);
}

static int pt_pwrite(struct filter *f, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	pt_count(f);
	return filter_next_pwrite(f, buf, count, offset, flags);
}

static int pt_flush(struct filter *f, uint32_t flags)
{
	pt_count(f);
	return filter_next_flush(f, flags);
}

static int pt_trim(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	pt_count(f);
	return filter_next_trim(f, count, offset, flags);
}

static int pt_zero(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	pt_count(f);
	return filter_next_zero(f, count, offset, flags);
}

static int pt_cache(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	pt_count(f);
	return filter_next_cache(f, count, offset, flags);
}

static int pt_extents(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags,
		      struct extents *e)
{
	pt_count(f);
	return filter_next_extents(f, count, offset, flags, e);
}

static int pt_can_write(struct filter *f)
{
	return filter_next_can_write(f);
}

static int pt_can_trim(struct filter *f)
{
	return filter_next_can_trim(f);
}

static int pt_can_zero(struct filter *f)
{
	return filter_next_can_zero(f);
}

static int pt_can_fua(struct filter *f)
{
	return filter_next_can_fua(f);
}

static int pt_can_cache(struct filter *f)
{
	return filter_next_can_cache(f);
}

static int pt_can_multi_conn(struct filter *f)
{
	return filter_next_can_multi_conn(f);
}

const struct filter_ops passthrough_filter_ops = {
	.name = "passthrough",
	.attach = pt_attach,
	.detach = pt_detach,
	.can_write = pt_can_write,
	.can_trim = pt_can_trim,
	.can_zero = pt_can_zero,
	.can_fua = pt_can_fua,
	.can_cache = pt_can_cache,
	.can_multi_conn = pt_can_multi_conn,
	.pread = pt_pread,
	.pwrite = pt_pwrite,
	.flush = pt_flush,
	.trim = pt_trim,
	.zero = pt_zero,
	.cache = pt_cache,
	.extents = pt_extents,
};
