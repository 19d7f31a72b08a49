/* Metadata contexts and NBD_CMD_BLOCK_STATUS.
 *
 * Each export offers a list of contexts: base:allocation (holes and zeroes of
 * the device, through its filter stack) on every export, and the contexts the
 * device's stack publishes (a snapshot image's CBT as
 * qemu:dirty-bitmap:GENERATION/N). The negotiation and the reply code do not
 * know what a published context means: they list names and ask for extents. */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "core/device.h"
#include "core/extents.h"
#include "core/io.h"
#include "nbd/nbd_internal.h"
#include "nbd/nbd_proto.h"

/* LIST: "ns:" (an empty leaf) matches the namespace, a query ending in ':'
 * matches names it prefixes; otherwise (and always for SET) names match exactly.
 * Unknown namespaces and leaves are ignored, as the spec requires. */
static bool meta_matches(const char *name, const char *query, bool wildcards)
{
	size_t qlen;

	if (!query)
		return true;
	qlen = strlen(query);
	if (wildcards && qlen > 0 && query[qlen - 1] == ':')
		return strncmp(name, query, qlen) == 0;
	return strcmp(name, query) == 0;
}

struct match {
	const char *query;
	bool wildcards;
	void (*fn)(const struct nbd_meta_context *, void *);
	void *opaque;
};

static int match_published(const char *name, const char *description, void *opaque)
{
	struct match *m = opaque;
	struct nbd_meta_context ctx = { .base_allocation = false };

	if (strlen(name) >= sizeof(ctx.name) || !meta_matches(name, m->query, m->wildcards))
		return 0;
	strcpy(ctx.name, name);
	m->fn(&ctx, m->opaque);
	return 0;
}

void nbd_meta_match(struct nbd_export *exp, const char *query, bool wildcards,
		    void (*fn)(const struct nbd_meta_context *, void *), void *opaque)
{
	struct nbd_meta_context ctx = { .name = "base:allocation", .base_allocation = true };
	struct match m = { .query = query, .wildcards = wildcards, .fn = fn, .opaque = opaque };

	if (meta_matches(ctx.name, query, wildcards))
		fn(&ctx, opaque);
	device_list_contexts(exp->dev, match_published, &m);
}

/* Encode E as one status chunk for context ID. */
static int send_status_chunk(struct nbd_conn *c, const struct nbd_request *req, uint32_t id,
			     const struct extents *e, bool last)
{
	size_t n = extents_count(e), dlen = c->extended ? 16 : 8;
	size_t len = (c->extended ? 8 : 4) + n * dlen;
	char *buf = malloc(len), *p;
	struct iovec iov[2];
	int r;

	if (!buf)
		return nbd_reply_error(c, req, -ENOMEM, "out of memory");
	p = buf;
	put_be32(p, id);
	p += 4;
	if (c->extended) {
		put_be32(p, (uint32_t)n);
		p += 4;
	}
	for (size_t i = 0; i < n; i++) {
		const struct extent *x = extents_get(e, i);
		uint32_t state = x->type; /* the EXTENT_ bits are the context's own */

		if (c->extended) {
			put_be64(p, x->length);
			put_be64(p + 8, state);
		} else {
			/* Compact requests are at most 4 GiB - 1, so extents fit in 32 bits. */
			put_be32(p, (uint32_t)x->length);
			put_be32(p + 4, state);
		}
		p += dlen;
	}
	iov[1].iov_base = buf;
	iov[1].iov_len = len;
	r = nbd_reply_chunk(c, req,
			    last ? NBD_REPLY_FLAG_DONE : 0,
			    c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT : NBD_REPLY_TYPE_BLOCK_STATUS,
			    iov, 2);
	free(buf);
	return r;
}

void nbd_serve_block_status(struct nbd_conn *c, const struct nbd_request *req)
{
	struct extents **all;
	uint64_t end = req->offset + req->length; /* range checked by the caller */
	uint32_t flags = (req->flags & NBD_CMD_FLAG_REQ_ONE) ? BDF_REQ_ONE : 0;
	size_t max = flags ? 1 : NBD_MAX_EXTENTS;
	int r = 0;

	/* Gather every context first: an error must come before any status chunk. */
	all = calloc(c->n_meta, sizeof(*all));
	if (!all) {
		nbd_reply_error(c, req, -ENOMEM, "out of memory");
		return;
	}
	for (size_t i = 0; i < c->n_meta && r == 0; i++) {
		all[i] = extents_new(req->offset, end, max);
		if (!all[i]) {
			r = -ENOMEM;
			break;
		}
		if (c->meta[i].ctx.base_allocation)
			r = device_extents(c->exp->dev, req->length, req->offset, flags, all[i]);
		else
			r = device_context_extents(c->exp->dev, c->meta[i].ctx.name, req->length, req->offset,
						   flags, all[i]);
		if (r == 0 && extents_count(all[i]) == 0)
			r = -EIO; /* a context must describe at least one extent */
	}
	if (r < 0)
		nbd_reply_error(c, req, r, "block status failed");
	else
		for (size_t i = 0; i < c->n_meta; i++)
			if (send_status_chunk(c, req, c->meta[i].id, all[i], i + 1 == c->n_meta) < 0)
				break;
	for (size_t i = 0; i < c->n_meta; i++)
		extents_free(all[i]);
	free(all);
}
