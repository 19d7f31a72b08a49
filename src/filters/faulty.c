/* faulty (see faulty.h): each request is checked against the device's rules
 * before it goes down. One that fires waits its delay, then fails with the
 * rule's error, never reaching the layers below; a short write sends its
 * first half (rounded down to whole sectors) down first, so that the store
 * holds a torn write that the client was told failed. */
#include "filters/faulty.h"

#include <errno.h>
#include <stdlib.h>

#include "common/fault.h"
#include "common/log.h"
#include "core/device.h"
#include "core/filter.h"
#include "core/io.h"

static int fy_attach(struct filter *f, void *ctx)
{
	struct fault_rules *fr = malloc(sizeof(*fr));

	if (!fr)
		return -ENOMEM;
	fault_rules_init(fr);
	f->priv = fr;
	return 0;
}

static int fy_detach(struct filter *f)
{
	struct fault_rules *fr = f->priv;
	uint64_t injected;

	fault_rules_get(fr, NULL, 0, &injected);
	if (injected)
		log_info("%s: faulty injected %llu faults", device_name(f->dev), (unsigned long long)injected);
	fault_rules_destroy(fr);
	free(fr);
	f->priv = NULL;
	return 0;
}

/* 0: go on down; else what the request answers (its delay waited). */
static int check(struct filter *f, unsigned op, uint64_t count, uint64_t offset, struct fault_hit *hit)
{
	if (!fault_rules_check(f->priv, op, offset, count, hit))
		return 0;
	if (hit->delay_ms)
		fault_sleep_ms(hit->delay_ms);
	if (hit->error)
		log_debug("%s: faulty: %s of %llu bytes at %llu fails with %s%s", device_name(f->dev),
			  fault_op_name(op), (unsigned long long)count, (unsigned long long)offset,
			  fault_error_name(-hit->error), hit->short_write ? " after its first half" : "");
	return hit->error;
}

static int fy_pread(struct filter *f, void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	struct fault_hit hit;
	int r = check(f, FAULT_OP_READ, count, offset, &hit);

	return r ? r : filter_next_pread(f, buf, count, offset, flags);
}

static int fy_pwrite(struct filter *f, const void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
	struct fault_hit hit;
	int r = check(f, FAULT_OP_WRITE, count, offset, &hit);
	uint64_t half;

	if (!r)
		return filter_next_pwrite(f, buf, count, offset, flags);
	half = count / 2 / BDF_SECTOR_SIZE * BDF_SECTOR_SIZE;
	if (hit.short_write && half)
		filter_next_pwrite(f, buf, half, offset, flags); /* the error is the answer, whatever this did */
	return r;
}

static int fy_flush(struct filter *f, uint32_t flags)
{
	struct fault_hit hit;
	int r = check(f, FAULT_OP_FLUSH, 0, 0, &hit);

	return r ? r : filter_next_flush(f, flags);
}

static int fy_trim(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	struct fault_hit hit;
	int r = check(f, FAULT_OP_TRIM, count, offset, &hit);

	return r ? r : filter_next_trim(f, count, offset, flags);
}

static int fy_zero(struct filter *f, uint64_t count, uint64_t offset, uint32_t flags)
{
	struct fault_hit hit;
	int r = check(f, FAULT_OP_ZERO, count, offset, &hit);

	return r ? r : filter_next_zero(f, count, offset, flags);
}

const struct filter_ops faulty_filter_ops = {
	.name = "faulty",
	.attach = fy_attach,
	.detach = fy_detach,
	.pread = fy_pread,
	.pwrite = fy_pwrite,
	.flush = fy_flush,
	.trim = fy_trim,
	.zero = fy_zero,
};

static int with_rules(struct device *dev, int (*fn)(struct filter *f, void *opaque), void *opaque)
{
	return device_with_filter(dev, &faulty_filter_ops, fn, opaque);
}

static int add_one(struct filter *f, void *opaque)
{
	return fault_rules_add(f->priv, opaque);
}

int faulty_add_rule(struct device *dev, const struct fault_spec *spec)
{
	struct fault_spec s = *spec;

	return with_rules(dev, add_one, &s);
}

static int clear_all(struct filter *f, void *opaque)
{
	fault_rules_clear(f->priv);
	return 0;
}

int faulty_clear(struct device *dev)
{
	return with_rules(dev, clear_all, NULL);
}

struct status_req {
	struct fault_rule_status *out;
	size_t max, n;
	uint64_t injected;
};

static int get_status(struct filter *f, void *opaque)
{
	struct status_req *rq = opaque;

	rq->n = fault_rules_get(f->priv, rq->out, rq->max, &rq->injected);
	return 0;
}

int faulty_status(struct device *dev, struct fault_rule_status *out, size_t max, size_t *n, uint64_t *injected)
{
	struct status_req rq = { .out = out, .max = max };
	int r = with_rules(dev, get_status, &rq);

	*n = rq.n;
	*injected = rq.injected;
	return r;
}
