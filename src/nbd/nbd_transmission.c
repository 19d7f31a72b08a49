/* NBD transmission phase: decoding requests, checking them, running them on the
 * device and sending the replies.
 *
 * Each connection has a few worker threads (nbdkit's model). A worker takes the
 * read lock, reads one request with its payload, lets go, runs it, and sends the
 * reply under the write lock; so requests run in parallel and replies go out in
 * the order they finish. A READ or WRITE buffer comes from the server's payload
 * budget (nbd_budget.c) for one request and is freed after its reply: whatever
 * clients send, a request that does not fit waits, and memory stays bounded.
 * Only a broken framing (bad magic, a payload too large to skip) ends the
 * session.
 *
 * A client that did not negotiate block sizes may not know our 32 MiB maximum
 * payload, so its READs and WRITEs are served up to NBD_MAX_REQUEST (64 MiB,
 * as nbd-server and nbdkit do), one NBD_MAX_PAYLOAD piece at a time through
 * one buffer: such a request costs the budget no more than the largest one of
 * a client that did. */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/bytes.h"
#include "common/log.h"
#include "core/device.h"
#include "core/extents.h"
#include "core/io.h"
#include "nbd/nbd_internal.h"
#include "nbd/nbd_proto.h"

/* Most segments a READ is split into for holes; the rest goes as data. */
#define READ_MAX_SEGMENTS 64

struct worker {
	struct nbd_conn *c;
	pthread_t thread;
};

uint32_t nbd_errno(int err)
{
	switch (-err) {
	case 0:
		return NBD_SUCCESS;
	case EPERM:
	case EROFS:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

static void conn_broken(struct nbd_conn *c)
{
	atomic_store(&c->closing, true);
	/* Wake the worker blocked in recv() so the connection winds down. */
	conn_shutdown(c, SHUT_RDWR);
}

static int send_locked(struct nbd_conn *c, struct iovec *iov, int n)
{
	int r;

	pthread_mutex_lock(&c->write_lock);
	r = conn_sendv(c, iov, n);
	pthread_mutex_unlock(&c->write_lock);
	if (r < 0)
		conn_broken(c);
	return r;
}

struct simple_header {
	uint32_t magic;
	uint32_t error;
	uint64_t cookie;
} __attribute__((packed));

static void simple_header(const struct nbd_request *req, uint32_t err, struct simple_header *h)
{
	h->magic = htobe32(NBD_SIMPLE_REPLY_MAGIC);
	h->error = htobe32(err);
	h->cookie = req->cookie; /* opaque: echoed as sent */
}

static int reply_simple(struct nbd_conn *c, const struct nbd_request *req, uint32_t err,
			void *data, size_t len)
{
	struct simple_header h;
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = data, .iov_len = len },
	};

	simple_header(req, err, &h);
	return send_locked(c, iov, len ? 2 : 1);
}

/* The header of a structured or extended chunk, whichever C negotiated. */
union chunk_header {
	struct {
		uint32_t magic;
		uint16_t flags;
		uint16_t type;
		uint64_t cookie;
		uint32_t length;
	} __attribute__((packed)) s;
	struct {
		uint32_t magic;
		uint16_t flags;
		uint16_t type;
		uint64_t cookie;
		uint64_t offset;
		uint64_t length;
	} __attribute__((packed)) x;
};

/* Fill in H for a chunk with LEN bytes of payload; returns its size. */
static size_t chunk_header(const struct nbd_conn *c, const struct nbd_request *req, uint16_t flags,
			   uint16_t type, uint64_t len, union chunk_header *h)
{
	if (c->extended) {
		h->x.magic = htobe32(NBD_EXTENDED_REPLY_MAGIC);
		h->x.flags = htobe16(flags);
		h->x.type = htobe16(type);
		h->x.cookie = req->cookie;
		h->x.offset = htobe64(req->offset);
		h->x.length = htobe64(len);
		return sizeof(h->x);
	}
	h->s.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
	h->s.flags = htobe16(flags);
	h->s.type = htobe16(type);
	h->s.cookie = req->cookie;
	h->s.length = htobe32((uint32_t)len);
	return sizeof(h->s);
}

int nbd_reply_chunk(struct nbd_conn *c, const struct nbd_request *req, uint16_t flags, uint16_t type,
		    struct iovec *iov, int n)
{
	union chunk_header h;
	uint64_t len = 0;

	for (int i = 1; i < n; i++)
		len += iov[i].iov_len;
	iov[0].iov_len = chunk_header(c, req, flags, type, len, &h);
	iov[0].iov_base = &h;
	return send_locked(c, iov, n);
}

int nbd_reply_ok(struct nbd_conn *c, const struct nbd_request *req)
{
	struct iovec iov[1];

	if (c->extended)
		return nbd_reply_chunk(c, req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, iov, 1);
	return reply_simple(c, req, 0, NULL, 0);
}

int nbd_reply_error(struct nbd_conn *c, const struct nbd_request *req, int err, const char *msg)
{
	uint32_t nerr = nbd_errno(err);
	struct {
		uint32_t error;
		uint16_t msglen;
	} __attribute__((packed)) e;
	size_t mlen = msg ? strlen(msg) : 0;
	struct iovec iov[3];

	log_debug("%s: request type %u at %llu+%llu: error %u: %s", c->peer, req->type,
		  (unsigned long long)req->offset, (unsigned long long)req->length, nerr, msg ? msg : "");
	if (!c->structured && !c->extended)
		return reply_simple(c, req, nerr, NULL, 0);
	e.error = htobe32(nerr);
	e.msglen = htobe16((uint16_t)mlen);
	iov[1].iov_base = &e;
	iov[1].iov_len = sizeof(e);
	iov[2].iov_base = (void *)msg;
	iov[2].iov_len = mlen;
	return nbd_reply_chunk(c, req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, iov, mlen ? 3 : 2);
}

static int reply_result(struct nbd_conn *c, const struct nbd_request *req, int r, const char *what)
{
	if (r < 0)
		return nbd_reply_error(c, req, r, what);
	return nbd_reply_ok(c, req);
}

static int send_data_chunk(struct nbd_conn *c, const struct nbd_request *req, uint64_t offset,
			   void *data, uint64_t len, bool last)
{
	uint64_t be_off = htobe64(offset);
	struct iovec iov[3] = {
		[1] = { .iov_base = &be_off, .iov_len = sizeof(be_off) },
		[2] = { .iov_base = data, .iov_len = len },
	};

	return nbd_reply_chunk(c, req, last ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_DATA, iov, 3);
}

static int send_hole_chunk(struct nbd_conn *c, const struct nbd_request *req, uint64_t offset,
			   uint32_t len, bool last)
{
	struct {
		uint64_t offset;
		uint32_t length;
	} __attribute__((packed)) p = { .offset = htobe64(offset), .length = htobe32(len) };
	struct iovec iov[2] = { [1] = { .iov_base = &p, .iov_len = sizeof(p) } };

	return nbd_reply_chunk(c, req, last ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_HOLE, iov, 2);
}

/* [OFFSET, OFFSET+LEN) of REQ (at most NBD_MAX_PAYLOAD), read into BUF, as
 * structured chunks: holes as OFFSET_HOLE, the rest as OFFSET_DATA, the final
 * one DONE if LAST. 0, or -1 once the reply is over (an error chunk went, or
 * the connection broke). */
static int read_chunks(struct nbd_conn *c, const struct nbd_request *req, char *buf,
		       uint64_t offset, uint64_t len, bool last)
{
	struct device *dev = c->exp->dev;
	uint64_t end = offset + len, pos = offset;
	struct extents *e = NULL;
	int r = 0;

	/* Find the holes, to send them as OFFSET_HOLE chunks; if we cannot, it is
	 * all data, which is always a correct answer. */
	if (!(req->flags & NBD_CMD_FLAG_DF)) {
		e = extents_new(offset, end, READ_MAX_SEGMENTS);
		if (e && device_extents(dev, len, offset, 0, e) < 0) {
			extents_free(e);
			e = NULL;
		}
	}

	for (size_t i = 0; pos < end; i++) {
		const struct extent *x = e ? extents_get(e, i) : NULL;
		uint64_t n = x ? x->length : end - pos;
		bool fin = last && pos + n >= end;

		if (x && (x->type & EXTENT_ZERO)) {
			r = send_hole_chunk(c, req, pos, (uint32_t)n, fin);
		} else {
			char *p = buf + (pos - offset);

			r = device_pread(dev, p, n, pos, 0);
			if (r < 0) {
				nbd_reply_error(c, req, r, "read failed");
				break;
			}
			r = send_data_chunk(c, req, pos, p, n, fin);
		}
		if (r < 0)
			break;
		pos += n;
	}
	extents_free(e);
	return r < 0 ? -1 : 0;
}

/* Send HDR (N iovecs), then REQ's data from its second NBD_MAX_PAYLOAD piece
 * on, each read into BUF before it goes; the caller has sent nothing yet and
 * BUF holds the first piece, which goes with HDR. The write lock is held from
 * the header to the last byte: nothing may come inside one message. Returns 0;
 * 1 if the connection broke; or the negative errno of a read that failed after
 * the header went out, and then, with PAD, zeroes stood in for the rest of the
 * data (a chunk must be completed), else the connection was cut there, before
 * another reply could follow the partial one. */
static int send_pieces(struct nbd_conn *c, const struct nbd_request *req, char *buf,
		       const struct iovec *hdr, int n, bool pad)
{
	struct device *dev = c->exp->dev;
	uint64_t pos = req->offset + NBD_MAX_PAYLOAD, end = req->offset + req->length;
	struct iovec iov[3];
	int err = 0, r;

	assert(n < 3 && req->length > NBD_MAX_PAYLOAD);
	memcpy(iov, hdr, n * sizeof(*iov));
	iov[n].iov_base = buf;
	iov[n].iov_len = NBD_MAX_PAYLOAD;
	pthread_mutex_lock(&c->write_lock);
	r = conn_sendv(c, iov, n + 1);
	while (r == 0 && pos < end) {
		size_t len = end - pos < NBD_MAX_PAYLOAD ? end - pos : NBD_MAX_PAYLOAD;

		if (err == 0) {
			err = device_pread(dev, buf, len, pos, 0);
			if (err < 0) {
				if (!pad) {
					conn_broken(c);
					break;
				}
				memset(buf, 0, NBD_MAX_PAYLOAD);
			}
		}
		iov[0].iov_base = buf;
		iov[0].iov_len = len;
		r = conn_sendv(c, iov, 1);
		pos += len;
	}
	pthread_mutex_unlock(&c->write_lock);
	if (r < 0) {
		conn_broken(c);
		return 1;
	}
	return err;
}

/* A READ over NBD_MAX_PAYLOAD that must go as one message: a simple reply, or
 * one OFFSET_DATA chunk for DF (which we honour rather than refuse with
 * EOVERFLOW, as nbdkit does). BUF has room for NBD_MAX_PAYLOAD bytes. The
 * first piece is read before anything is sent, so that an error there (a
 * removed device, say) is an ordinary error reply. */
static void read_one_message(struct nbd_conn *c, const struct nbd_request *req, char *buf)
{
	bool simple = !c->structured && !c->extended;
	uint64_t be_off = htobe64(req->offset);
	struct simple_header sh;
	union chunk_header ch;
	struct iovec hdr[2];
	int r;

	r = device_pread(c->exp->dev, buf, NBD_MAX_PAYLOAD, req->offset, 0);
	if (r < 0) {
		nbd_reply_error(c, req, r, "read failed");
		return;
	}
	if (simple) {
		simple_header(req, 0, &sh);
		hdr[0] = (struct iovec){ .iov_base = &sh, .iov_len = sizeof(sh) };
		/* Once the header has said success, the spec leaves only a hard
		 * disconnect (send_pieces cuts the connection). */
		r = send_pieces(c, req, buf, hdr, 1, false);
		if (r < 0)
			log_warn("%s: READ at %llu+%llu failed after its reply began (%s); closed",
				 c->peer, (unsigned long long)req->offset,
				 (unsigned long long)req->length, strerror(-r));
		return;
	}
	/* Not DONE: a read may still fail while the chunk is on its way. */
	hdr[0].iov_base = &ch;
	hdr[0].iov_len = chunk_header(c, req, 0, NBD_REPLY_TYPE_OFFSET_DATA,
				      sizeof(be_off) + req->length, &ch);
	hdr[1] = (struct iovec){ .iov_base = &be_off, .iov_len = sizeof(be_off) };
	r = send_pieces(c, req, buf, hdr, 2, true);
	if (r < 0) {
		nbd_reply_error(c, req, r, "read failed");
	} else if (r == 0) {
		struct iovec iov[1];

		nbd_reply_chunk(c, req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, iov, 1);
	}
}

/* The buffer comes from the budget once REQ is checked, for one piece of at
 * most NBD_MAX_PAYLOAD, and goes back once the reply is out. */
static void do_read(struct nbd_conn *c, const struct nbd_request *req)
{
	bool simple = !c->structured && !c->extended;
	uint64_t end = req->offset + req->length;
	size_t piece = req->length < NBD_MAX_PAYLOAD ? req->length : NBD_MAX_PAYLOAD;
	char *buf = nbd_payload_get(c, piece);
	int r;

	if (!buf) {
		nbd_reply_error(c, req, -ENOMEM, "out of memory");
		return;
	}
	if (req->length > NBD_MAX_PAYLOAD && (simple || (req->flags & NBD_CMD_FLAG_DF))) {
		read_one_message(c, req, buf);
	} else if (simple) {
		r = device_pread(c->exp->dev, buf, req->length, req->offset, 0);
		if (r < 0)
			reply_simple(c, req, nbd_errno(r), NULL, 0);
		else
			reply_simple(c, req, 0, buf, req->length);
	} else {
		/* Chunks of one reply may come between other replies (the
		 * spec allows it), so pieces need not hold the write lock. */
		for (uint64_t pos = req->offset, n; pos < end; pos += n) {
			n = end - pos < NBD_MAX_PAYLOAD ? end - pos : NBD_MAX_PAYLOAD;
			if (read_chunks(c, req, buf, pos, n, pos + n >= end) < 0)
				break;
		}
	}
	nbd_payload_put(c, buf, piece);
}

static void do_zero(struct nbd_conn *c, const struct nbd_request *req)
{
	uint32_t flags = 0;
	int r;

	if (req->flags & NBD_CMD_FLAG_FUA)
		flags |= BDF_FUA;
	if (!(req->flags & NBD_CMD_FLAG_NO_HOLE))
		flags |= BDF_MAY_TRIM;
	if (req->flags & NBD_CMD_FLAG_FAST_ZERO)
		flags |= BDF_FAST_ZERO;
	r = device_zero(c->exp->dev, req->length, req->offset, flags);
	if (r == -ENOTSUP)
		nbd_reply_error(c, req, r, "no fast way to write zeroes here");
	else
		reply_result(c, req, r, "write zeroes failed");
}

/* The flags each command accepts (FUA, where offered, on every command). */
static uint16_t allowed_flags(const struct nbd_conn *c, uint16_t type)
{
	uint16_t f = (c->eflags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;

	switch (type) {
	case NBD_CMD_READ:
		return f | ((c->eflags & NBD_FLAG_SEND_DF) ? NBD_CMD_FLAG_DF : 0);
	case NBD_CMD_WRITE:
		return f | (c->extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0);
	case NBD_CMD_WRITE_ZEROES:
		return f | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
	case NBD_CMD_BLOCK_STATUS:
		return f | NBD_CMD_FLAG_REQ_ONE;
	default:
		return f;
	}
}

/* The largest READ or WRITE C may send: a client that agreed to our block
 * sizes must keep to them; one that did not may expect what other servers
 * serve (see the top of this file). */
static uint64_t max_request(const struct nbd_conn *c)
{
	return c->block_size_negotiated ? NBD_MAX_PAYLOAD : NBD_MAX_REQUEST;
}

/* Check REQ; 0 if it may run, else the negative errno to answer with (and MSG). */
static int check_request(struct nbd_conn *c, const struct nbd_request *req, const char **msg)
{
	struct device *dev = c->exp->dev;
	bool write = false;
	int r;

	switch (req->type) {
	case NBD_CMD_READ:
	case NBD_CMD_CACHE:
	case NBD_CMD_BLOCK_STATUS:
		break;
	case NBD_CMD_WRITE:
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES:
		write = true;
		break;
	case NBD_CMD_FLUSH:
		break;
	default:
		*msg = "unknown command";
		return -EINVAL;
	}
	if (req->flags & ~allowed_flags(c, req->type)) {
		*msg = "flag not valid for this command";
		return -EINVAL;
	}
	if (req->type == NBD_CMD_FLUSH) {
		*msg = "FLUSH takes no offset or length";
		return req->offset || req->length ? -EINVAL : 0;
	}
	if (c->extended && req->type == NBD_CMD_WRITE && !(req->flags & NBD_CMD_FLAG_PAYLOAD_LEN)) {
		*msg = "WRITE needs NBD_CMD_FLAG_PAYLOAD_LEN with extended headers";
		return -EINVAL;
	}
	if (req->type == NBD_CMD_WRITE_ZEROES && (req->flags & NBD_CMD_FLAG_FAST_ZERO) &&
	    !(c->eflags & NBD_FLAG_SEND_FAST_ZERO)) {
		*msg = "FAST_ZERO was not offered";
		return -EINVAL;
	}
	if (write && (c->eflags & NBD_FLAG_READ_ONLY)) {
		*msg = "export is read-only";
		return -EPERM;
	}
	if ((req->type == NBD_CMD_TRIM && !(c->eflags & NBD_FLAG_SEND_TRIM)) ||
	    (req->type == NBD_CMD_WRITE_ZEROES && !(c->eflags & NBD_FLAG_SEND_WRITE_ZEROES)) ||
	    (req->type == NBD_CMD_CACHE && !(c->eflags & NBD_FLAG_SEND_CACHE))) {
		*msg = "this command was not offered for this export";
		return -EINVAL;
	}
	if (req->length == 0) {
		*msg = "zero-length request";
		return -EINVAL;
	}
	/* The spec answers ENOSPC for writes past the end, EINVAL for reads
	 * and trims; read-only was refused above. */
	r = device_check_range(dev, req->length, req->offset,
			       write && req->type != NBD_CMD_TRIM);
	if (r < 0) {
		*msg = "request beyond the end of the export";
		return r;
	}
	if (req->type == NBD_CMD_READ && req->length > max_request(c)) {
		*msg = "read larger than the maximum payload";
		return -EINVAL;
	}
	if (req->type == NBD_CMD_BLOCK_STATUS && c->n_meta == 0) {
		*msg = "no metadata context was negotiated";
		return -EINVAL;
	}
	return 0;
}

/* Run REQ (its payload, if any, in BUF) and reply. */
static void handle_request(struct nbd_conn *c, const struct nbd_request *req, void *buf)
{
	struct device *dev = c->exp->dev;
	uint32_t fua = (req->flags & NBD_CMD_FLAG_FUA) ? BDF_FUA : 0;
	const char *msg = NULL;
	int r = check_request(c, req, &msg);

	if (r < 0) {
		nbd_reply_error(c, req, r, msg);
		return;
	}
	switch (req->type) {
	case NBD_CMD_READ:
		do_read(c, req);
		break;
	case NBD_CMD_WRITE:
		reply_result(c, req, device_pwrite(dev, buf, req->length, req->offset, fua), "write failed");
		break;
	case NBD_CMD_FLUSH:
		reply_result(c, req, device_flush(dev, 0), "flush failed");
		break;
	case NBD_CMD_TRIM:
		reply_result(c, req, device_trim(dev, req->length, req->offset, fua), "trim failed");
		break;
	case NBD_CMD_CACHE:
		reply_result(c, req, device_cache(dev, req->length, req->offset, 0), "cache failed");
		break;
	case NBD_CMD_WRITE_ZEROES:
		do_zero(c, req);
		break;
	case NBD_CMD_BLOCK_STATUS:
		nbd_serve_block_status(c, req);
		break;
	}
}

/* Read one request header. 0, or -1 when the session is over. */
static int read_request(struct nbd_conn *c, struct nbd_request *req)
{
	unsigned char h[NBD_EXTENDED_REQUEST_SIZE];
	uint32_t magic;

	if (conn_recv(c, h, c->extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE) < 0)
		return -1;
	magic = get_be32(h);
	if (magic != (c->extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC)) {
		log_info("%s: bad request magic 0x%08x; closing", c->peer, magic);
		return -1;
	}
	req->flags = get_be16(h + 4);
	req->type = get_be16(h + 6);
	memcpy(&req->cookie, h + 8, 8);
	req->offset = get_be64(h + 16);
	req->length = c->extended ? get_be64(h + 24) : get_be32(h + 24);
	return 0;
}

/* Under the read lock: read REQ's payload, if it has one, into a buffer from
 * the budget (*BUF; nbd_payload_put it). Returns 0 (payload read, or none), a
 * negative errno for a request that must fail but leaves the stream in sync
 * (payload skipped), or 1 to close. */
static int read_payload(struct nbd_conn *c, const struct nbd_request *req, void **buf)
{
	bool has_payload = c->extended ? (req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) : req->type == NBD_CMD_WRITE;

	c->no_readahead = has_payload && req->length >= NBD_RECV_BUFFER;
	if (!has_payload)
		return 0;
	if (req->length > NBD_MAX_PAYLOAD || req->type != NBD_CMD_WRITE) {
		/* Skipping keeps the session usable; beyond 4 GiB it is an attack. */
		if (req->length > UINT32_MAX) {
			log_info("%s: payload of %llu bytes; closing", c->peer, (unsigned long long)req->length);
			return 1;
		}
		if (conn_discard(c, req->length) < 0)
			return 1;
		return -EINVAL;
	}
	/* May wait for budget, with the read lock: see nbd_budget.c. */
	*buf = nbd_payload_get(c, req->length);
	if (!*buf) {
		if (conn_discard(c, req->length) < 0)
			return 1;
		return -ENOMEM;
	}
	return conn_recv(c, *buf, req->length) < 0 ? 1 : 0;
}

/* REQ is a WRITE over NBD_MAX_PAYLOAD that C may send (its payload follows). */
static bool large_write(const struct nbd_conn *c, const struct nbd_request *req)
{
	bool has_payload = c->extended ? (req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) : true;

	return req->type == NBD_CMD_WRITE && has_payload && req->length > NBD_MAX_PAYLOAD &&
	       req->length <= max_request(c);
}

/* Under the read lock: a large_write(). Its payload is received and written
 * one NBD_MAX_PAYLOAD piece at a time through one buffer from the budget; the
 * lock stays held throughout, as the rest of the payload is next on the
 * stream. Once a piece fails, the rest is read and dropped. Returns 0 or the
 * negative errno to reply with (and *MSG) once the whole payload is read, or
 * 1 to close. */
static int write_pieces(struct nbd_conn *c, const struct nbd_request *req, const char **msg)
{
	uint32_t fua = (req->flags & NBD_CMD_FLAG_FUA) ? BDF_FUA : 0;
	uint64_t pos = 0;
	char *buf;
	int err;

	c->no_readahead = true;
	/* Checked before the first piece reaches the store. */
	err = check_request(c, req, msg);
	if (err < 0)
		return conn_discard(c, req->length) < 0 ? 1 : err;
	/* May wait for budget, with the read lock: see nbd_budget.c. */
	buf = nbd_payload_get(c, NBD_MAX_PAYLOAD);
	if (!buf) {
		*msg = "out of memory";
		return conn_discard(c, req->length) < 0 ? 1 : -ENOMEM;
	}
	while (err == 0 && pos < req->length) {
		size_t n = req->length - pos < NBD_MAX_PAYLOAD ? req->length - pos : NBD_MAX_PAYLOAD;

		if (conn_recv(c, buf, n) < 0) {
			nbd_payload_put(c, buf, NBD_MAX_PAYLOAD);
			return 1;
		}
		err = device_pwrite(c->exp->dev, buf, n, req->offset + pos, fua);
		if (err < 0)
			*msg = "write failed";
		pos += n;
	}
	nbd_payload_put(c, buf, NBD_MAX_PAYLOAD);
	if (conn_discard(c, req->length - pos) < 0)
		return 1;
	return err;
}

static void *worker_loop(void *arg)
{
	struct worker *w = arg;
	struct nbd_conn *c = w->c;

	for (;;) {
		struct nbd_request req;
		const char *msg = NULL;
		void *buf = NULL;
		bool large;
		int r;

		pthread_mutex_lock(&c->read_lock);
		if (atomic_load(&c->closing) || read_request(c, &req) < 0) {
			atomic_store(&c->closing, true);
			pthread_mutex_unlock(&c->read_lock);
			break;
		}
		if (req.type == NBD_CMD_DISC) {
			/* No reply; what is in flight is still answered. */
			log_debug("%s: client disconnected", c->peer);
			atomic_store(&c->closing, true);
			pthread_mutex_unlock(&c->read_lock);
			break;
		}
		large = large_write(c, &req);
		r = large ? write_pieces(c, &req, &msg) : read_payload(c, &req, &buf);
		if (r > 0)
			atomic_store(&c->closing, true);
		pthread_mutex_unlock(&c->read_lock);
		if (r > 0) {
			nbd_payload_put(c, buf, req.length);
			break;
		}

		if (large)
			reply_result(c, &req, r, msg); /* written already */
		else if (r < 0)
			nbd_reply_error(c, &req, r,
					r == -ENOMEM ? "out of memory" :
					req.type == NBD_CMD_WRITE ? "write larger than the maximum payload"
								  : "this command takes no payload");
		else
			handle_request(c, &req, buf);
		/* Freed now that the reply is out: idle workers hold no payload. */
		nbd_payload_put(c, buf, req.length);
	}
	return NULL;
}

void nbd_transmission(struct nbd_conn *c)
{
	unsigned n = c->srv->cfg.threads;
	struct worker *w = calloc(n, sizeof(*w));
	unsigned started = 1;

	if (!w) {
		log_error("%s: out of memory", c->peer);
		return;
	}
	for (unsigned i = 0; i < n; i++)
		w[i].c = c;
	/* This thread is worker 0; the others share the connection with it. */
	for (unsigned i = 1; i < n; i++) {
		if (pthread_create(&w[i].thread, NULL, worker_loop, &w[i]) != 0) {
			log_warn("%s: only %u worker threads", c->peer, started);
			break;
		}
		started++;
	}
	worker_loop(&w[0]);
	for (unsigned i = 1; i < started; i++)
		pthread_join(w[i].thread, NULL);
	free(w);
}
