/* NBD handshake: fixed newstyle option haggling up to NBD_OPT_GO / EXPORT_NAME.
 *
 * Every option is answered (or the session closed where the spec demands it)
 * without trusting a length the client sends: option data over the limit is read
 * and dropped in pieces, every inner length is checked against the option length,
 * and the number of options and the time a handshake may take are bounded. */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/log.h"
#include "core/device.h"
#include "nbd/nbd_internal.h"
#include "nbd/nbd_proto.h"

static int send_rep(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
	struct {
		uint64_t magic;
		uint32_t opt;
		uint32_t type;
		uint32_t len;
	} __attribute__((packed)) h = {
		.magic = htobe64(NBD_REP_MAGIC),
		.opt = htobe32(opt),
		.type = htobe32(type),
		.len = htobe32(len),
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)data, .iov_len = len },
	};

	return conn_sendv(c, iov, len ? 2 : 1);
}

static int send_ack(struct nbd_conn *c, uint32_t opt)
{
	return send_rep(c, opt, NBD_REP_ACK, NULL, 0);
}

__attribute__((format(printf, 4, 5)))
static int send_err(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	log_debug("%s: option %u refused: %s", c->peer, opt, msg);
	return send_rep(c, opt, type, msg, (uint32_t)n);
}

/* A protocol string: at most 4096 bytes and no NUL inside. */
static bool valid_string(const char *s, uint32_t len)
{
	return len <= NBD_MAX_STRING && memchr(s, '\0', len) == NULL;
}

/* What the device's filter stack supports, as it is at this handshake. */
uint16_t nbd_export_flags(const struct nbd_conn *c, const struct nbd_export *exp)
{
	struct device *dev = exp->dev;
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;

	if (exp->readonly || !device_can_write(dev)) {
		f |= NBD_FLAG_READ_ONLY;
	} else {
		if (device_can_trim(dev))
			f |= NBD_FLAG_SEND_TRIM;
		if (device_can_zero(dev))
			f |= NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
	}
	if (device_can_fua(dev))
		f |= NBD_FLAG_SEND_FUA;
	if (device_can_cache(dev))
		f |= NBD_FLAG_SEND_CACHE;
	if (device_can_multi_conn(dev))
		f |= NBD_FLAG_CAN_MULTI_CONN;
	if (c->structured || c->extended)
		f |= NBD_FLAG_SEND_DF;
	return f;
}

static int list_one(struct nbd_export *exp, void *opaque)
{
	struct nbd_conn *c = opaque;
	const char *desc = nbd_export_description(exp);
	size_t nlen = strlen(exp->name), dlen = strlen(desc);
	char *buf = malloc(4 + nlen + dlen);
	int r;

	if (!buf)
		return -1;
	put_be32(buf, (uint32_t)nlen);
	memcpy(buf + 4, exp->name, nlen);
	memcpy(buf + 4 + nlen, desc, dlen);
	r = send_rep(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, (uint32_t)(4 + nlen + dlen));
	free(buf);
	return r;
}

static int send_info(struct nbd_conn *c, uint32_t opt, uint16_t type, const void *payload, size_t len)
{
	char buf[2 + NBD_MAX_STRING];

	put_be16(buf, type);
	if (len > NBD_MAX_STRING)
		len = NBD_MAX_STRING;
	memcpy(buf + 2, payload, len);
	return send_rep(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + len));
}

/* NBD_OPT_INFO and NBD_OPT_GO. 1: GO succeeded; 0: go on haggling; -1: close. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const char *data, uint32_t len)
{
	bool want_name = false, want_desc = false, want_bs = false;
	struct nbd_export *exp;
	uint32_t namelen;
	uint16_t nreq, eflags;
	char *name;
	int r;

	if (len < 6)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "option too short");
	namelen = get_be32(data);
	if (namelen > len - 6)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "export name length beyond the option");
	if (!valid_string(data + 4, namelen))
		return send_err(c, opt, NBD_REP_ERR_INVALID, "invalid export name");
	nreq = get_be16(data + 4 + namelen);
	if (len != 4 + namelen + 2 + 2u * nreq)
		return send_err(c, opt, NBD_REP_ERR_INVALID,
				"%u information requests do not match the option length", nreq);
	for (unsigned i = 0; i < nreq; i++) {
		uint16_t info = get_be16(data + 6 + namelen + 2 * i);

		if (info == NBD_INFO_NAME)
			want_name = true;
		else if (info == NBD_INFO_DESCRIPTION)
			want_desc = true;
		else if (info == NBD_INFO_BLOCK_SIZE)
			want_bs = true;
	}

	name = strndup(data + 4, namelen);
	if (!name)
		return -1;
	exp = nbd_export_get(c->srv, name);
	if (!exp) {
		r = send_err(c, opt, NBD_REP_ERR_UNKNOWN, "unknown export '%s'", name);
		free(name);
		return r;
	}
	free(name);

	{
		struct {
			uint64_t size;
			uint16_t flags;
		} __attribute__((packed)) ex;
		struct {
			uint32_t min, pref, max;
		} __attribute__((packed)) bs = {
			.min = htobe32(1),
			.pref = htobe32(NBD_PREFERRED_BLOCK),
			.max = htobe32(NBD_MAX_PAYLOAD),
		};
		const char *desc;

		eflags = nbd_export_flags(c, exp);
		ex.size = htobe64(device_size(exp->dev));
		ex.flags = htobe16(eflags);
		r = send_info(c, opt, NBD_INFO_EXPORT, &ex, sizeof(ex));
		if (r == 0 && want_name)
			r = send_info(c, opt, NBD_INFO_NAME, exp->name, strlen(exp->name));
		desc = nbd_export_description(exp);
		if (r == 0 && want_desc && desc[0])
			r = send_info(c, opt, NBD_INFO_DESCRIPTION, desc, strlen(desc));
		/* Our constraints are the defaults; saying so costs nothing. Only
		 * a client that asked is bound by them (want_bs, below). */
		if (r == 0)
			r = send_info(c, opt, NBD_INFO_BLOCK_SIZE, &bs, sizeof(bs));
	}
	if (r == 0)
		r = send_ack(c, opt);
	if (r < 0 || opt == NBD_OPT_INFO) {
		nbd_export_put(exp);
		return r < 0 ? -1 : 0;
	}

	/* Contexts chosen for another export do not carry over (spec: same name). */
	if (c->meta_export && strcmp(c->meta_export, exp->name) != 0)
		c->n_meta = 0;
	c->exp = exp;
	c->eflags = eflags;
	/* Only this GO counts: an INFO before it commits the client to nothing. */
	c->block_size_negotiated = want_bs;
	return 1;
}

static int opt_export_name(struct nbd_conn *c, const char *data, uint32_t len)
{
	struct nbd_export *exp;
	char zeroes[124] = { 0 };
	char *name;
	struct {
		uint64_t size;
		uint16_t flags;
	} __attribute__((packed)) ex;
	struct iovec iov[2] = {
		{ .iov_base = &ex, .iov_len = sizeof(ex) },
		{ .iov_base = zeroes, .iov_len = sizeof(zeroes) },
	};

	if (c->extended) {
		log_info("%s: NBD_OPT_EXPORT_NAME after extended headers; closing", c->peer);
		return -1;
	}
	if (!valid_string(data, len)) {
		log_info("%s: invalid export name; closing", c->peer);
		return -1;
	}
	name = strndup(data, len);
	if (!name)
		return -1;
	exp = nbd_export_get(c->srv, name);
	if (!exp) {
		/* EXPORT_NAME has no error reply: the spec says to close. */
		log_info("%s: unknown export '%s'; closing", c->peer, name);
		free(name);
		return -1;
	}
	free(name);
	c->eflags = nbd_export_flags(c, exp);
	ex.size = htobe64(device_size(exp->dev));
	ex.flags = htobe16(c->eflags);
	if (conn_sendv(c, iov, c->no_zeroes ? 1 : 2) < 0) {
		nbd_export_put(exp);
		return -1;
	}
	if (c->meta_export && strcmp(c->meta_export, exp->name) != 0)
		c->n_meta = 0;
	c->exp = exp;
	return 1;
}

/* Contexts are offered per export; the ids a connection sees are 1..n in the
 * order it selected them. */
struct meta_emit {
	struct nbd_conn *c;
	uint32_t opt;
	bool select;
	int err;
};

static void meta_emit_one(const struct nbd_meta_context *ctx, void *opaque)
{
	struct meta_emit *m = opaque;
	struct nbd_conn *c = m->c;
	size_t nlen = strlen(ctx->name);
	char buf[4 + NBD_MAX_STRING];
	uint32_t id = 0;

	if (m->err)
		return;
	if (m->select) {
		for (size_t i = 0; i < c->n_meta; i++)
			if (strcmp(c->meta[i].ctx.name, ctx->name) == 0)
				return; /* asked twice: one id */
		struct nbd_meta_selected *v = realloc(c->meta, (c->n_meta + 1) * sizeof(*v));

		if (!v) {
			m->err = -1;
			return;
		}
		c->meta = v;
		id = (uint32_t)c->n_meta + 1;
		v[c->n_meta].id = id;
		v[c->n_meta].ctx = *ctx;
		c->n_meta++;
	}
	put_be32(buf, id);
	memcpy(buf + 4, ctx->name, nlen);
	if (send_rep(c, m->opt, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + nlen)) < 0)
		m->err = -1;
}

static int opt_meta_context(struct nbd_conn *c, uint32_t opt, const char *data, uint32_t len)
{
	bool select = opt == NBD_OPT_SET_META_CONTEXT;
	struct meta_emit m = { .c = c, .opt = opt, .select = select };
	struct nbd_export *exp;
	uint32_t namelen, nq, pos;
	char *name;

	if (select) {
		/* SET replaces the previous selection even when it fails. */
		c->n_meta = 0;
		free(c->meta_export);
		c->meta_export = NULL;
	}
	if (!c->structured && !c->extended)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "negotiate structured replies first");
	if (len < 8)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "option too short");
	namelen = get_be32(data);
	if (namelen > len - 8)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "export name length beyond the option");
	if (!valid_string(data + 4, namelen))
		return send_err(c, opt, NBD_REP_ERR_INVALID, "invalid export name");
	nq = get_be32(data + 4 + namelen);
	/* Check every query's length before answering anything. */
	pos = 8 + namelen;
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t qlen;

		if (len - pos < 4)
			return send_err(c, opt, NBD_REP_ERR_INVALID, "query %u beyond the option", i);
		qlen = get_be32(data + pos);
		if (qlen > len - pos - 4)
			return send_err(c, opt, NBD_REP_ERR_INVALID, "query %u length beyond the option", i);
		if (!valid_string(data + pos + 4, qlen))
			return send_err(c, opt, NBD_REP_ERR_INVALID, "query %u is not a valid string", i);
		pos += 4 + qlen;
	}
	if (pos != len)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "trailing bytes after the queries");

	name = strndup(data + 4, namelen);
	if (!name)
		return -1;
	exp = nbd_export_get(c->srv, name);
	if (!exp) {
		int r = send_err(c, opt, NBD_REP_ERR_UNKNOWN, "unknown export '%s'", name);

		free(name);
		return r;
	}
	free(name);

	if (nq == 0 && !select)
		nbd_meta_match(exp, NULL, true, meta_emit_one, &m);
	pos = 8 + namelen;
	for (uint32_t i = 0; i < nq && !m.err; i++) {
		uint32_t qlen = get_be32(data + pos);
		char *q = strndup(data + pos + 4, qlen);

		if (!q) {
			m.err = -1;
			break;
		}
		nbd_meta_match(exp, q, !select, meta_emit_one, &m);
		free(q);
		pos += 4 + qlen;
	}
	if (select && !m.err && !(c->meta_export = strdup(exp->name)))
		m.err = -1;
	nbd_export_put(exp);
	if (m.err)
		return -1;
	return send_ack(c, opt);
}

static int opt_no_data(struct nbd_conn *c, uint32_t opt, uint32_t len)
{
	if (len != 0) {
		send_err(c, opt, NBD_REP_ERR_INVALID, "this option takes no data");
		return -1;
	}
	return 0;
}

/* NBD_OPT_STARTTLS: 0 with TLS on (or refused, the session going on in the
 * clear), -1 to close. */
static int opt_starttls(struct nbd_conn *c, uint32_t len)
{
	if (len != 0)
		return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
	if (c->tls_mode == NBD_TLS_OFF || !c->srv->cfg.tls)
		return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, "TLS is not available on this server");
	if (c->tls_active)
		return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "TLS is already in use");
	/* Bytes that came in the clear behind STARTTLS would be taken as sent
	 * under TLS (the STARTTLS injection of CVE-2021-3716): a client must
	 * wait for our reply before it starts the TLS handshake. */
	if (c->rend > c->rstart) {
		log_warn("%s: data after NBD_OPT_STARTTLS before the reply; closing", c->peer);
		return -1;
	}
	if (send_ack(c, NBD_OPT_STARTTLS) < 0)
		return -1;
	if (nbd_tls_start(c->srv->cfg.tls, &c->tr, c->peer, c->deadline_ns) < 0)
		return -1;
	c->tls_active = true;
	/* Nothing said in the clear holds under TLS (spec: the server MUST
	 * forget it): the client negotiates again. */
	c->structured = false;
	c->extended = false;
	c->n_meta = 0;
	free(c->meta_export);
	c->meta_export = NULL;
	return 0;
}

/* Before TLS in require mode, everything but STARTTLS and ABORT is refused.
 * 1: OPT may go on; 0: answered, next option; -1: close. */
static int tls_gate(struct nbd_conn *c, uint32_t opt)
{
	if (c->tls_mode != NBD_TLS_REQUIRE || c->tls_active || opt == NBD_OPT_STARTTLS || opt == NBD_OPT_ABORT)
		return 1;
	if (opt == NBD_OPT_EXPORT_NAME) {
		/* It has no error reply: the spec says to close. */
		log_info("%s: NBD_OPT_EXPORT_NAME without TLS, which this server requires; closing", c->peer);
		return -1;
	}
	return send_err(c, opt, NBD_REP_ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS first") < 0 ? -1 : 0;
}

/* Handle one option. 1: enter transmission; 0: next option; -1: close. */
static int handle_option(struct nbd_conn *c, uint32_t opt, const char *data, uint32_t len)
{
	int r = tls_gate(c, opt);

	if (r <= 0)
		return r;
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return opt_export_name(c, data, len);
	case NBD_OPT_ABORT:
		send_ack(c, opt);
		return -1;
	case NBD_OPT_LIST:
		if (len != 0)
			return send_err(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
		if (nbd_export_foreach(c->srv, list_one, c) != 0)
			return -1;
		return send_ack(c, opt);
	case NBD_OPT_STARTTLS:
		return opt_starttls(c, len);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(c, opt, data, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (opt_no_data(c, opt, len) < 0)
			return 0;
		if (c->extended)
			return send_err(c, opt, NBD_REP_ERR_EXT_HEADER_REQD, "extended headers are already in use");
		if (c->structured)
			return send_err(c, opt, NBD_REP_ERR_INVALID, "structured replies are already in use");
		c->structured = true;
		return send_ack(c, opt);
	case NBD_OPT_EXTENDED_HEADERS:
		if (opt_no_data(c, opt, len) < 0)
			return 0;
		if (c->extended)
			return send_err(c, opt, NBD_REP_ERR_INVALID, "extended headers are already in use");
		c->extended = true;
		return send_ack(c, opt);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta_context(c, opt, data, len);
	default:
		return send_err(c, opt, NBD_REP_ERR_UNSUP, "unknown option %u", opt);
	}
}

int nbd_handshake(struct nbd_conn *c)
{
	struct {
		uint64_t magic;
		uint64_t ihaveopt;
		uint16_t flags;
	} __attribute__((packed)) greeting = {
		.magic = htobe64(NBD_MAGIC),
		.ihaveopt = htobe64(NBD_IHAVEOPT),
		.flags = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
	};
	struct iovec iov = { .iov_base = &greeting, .iov_len = sizeof(greeting) };
	uint32_t cflags;

	if (conn_sendv(c, &iov, 1) < 0 || conn_recv(c, &cflags, sizeof(cflags)) < 0)
		return -1;
	cflags = be32toh(cflags);
	if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
		log_info("%s: unknown client flags 0x%x; closing", c->peer, cflags);
		return -1;
	}
	if (!(cflags & NBD_FLAG_C_FIXED_NEWSTYLE)) {
		log_info("%s: client does not speak fixed newstyle; closing", c->peer);
		return -1;
	}
	c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

	for (;;) {
		struct {
			uint64_t magic;
			uint32_t opt;
			uint32_t len;
		} __attribute__((packed)) h;
		uint32_t opt, len;
		char *data;
		int r;

		if (conn_recv(c, &h, sizeof(h)) < 0)
			return -1;
		if (be64toh(h.magic) != NBD_IHAVEOPT) {
			log_info("%s: bad option magic; closing", c->peer);
			return -1;
		}
		opt = be32toh(h.opt);
		len = be32toh(h.len);
		if (++c->n_options > NBD_MAX_OPTIONS) {
			log_info("%s: more than %u options; closing", c->peer, NBD_MAX_OPTIONS);
			return -1;
		}
		if (len > NBD_MAX_OPTION_DATA) {
			if (opt == NBD_OPT_EXPORT_NAME) {
				log_info("%s: export name of %u bytes; closing", c->peer, len);
				return -1;
			}
			if (conn_discard(c, len) < 0)
				return -1;
			if (send_err(c, opt, NBD_REP_ERR_TOO_BIG, "option data of %u bytes is over the %u byte limit",
				     len, NBD_MAX_OPTION_DATA) < 0)
				return -1;
			continue;
		}
		data = malloc(len + 1);
		if (!data)
			return -1;
		if (conn_recv(c, data, len) < 0) {
			free(data);
			return -1;
		}
		data[len] = '\0';
		r = handle_option(c, opt, data, len);
		free(data);
		if (r != 0)
			return r > 0 ? 0 : -1;
	}
}
