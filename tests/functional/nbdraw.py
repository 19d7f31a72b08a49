#!/usr/bin/python3
"""A raw NBD client for tests: it sends exactly the bytes a test asks for, valid
or not (wrong magic, lying lengths, partial data, unknown flags), and decodes
what the server answers (option replies; simple, structured and extended reply
chunks). Standard library only.

    c = Client(sock)                 # connect to a Unix socket
    c.greeting()                     # read the greeting, send the client flags
    c.structured_reply()             # or c.extended_headers()
    c.go("disk")                     # NBD_OPT_GO: now in transmission
    err, data = c.read(0, 4096)      # READ, holes filled in
    c.disconnect()

Lower level: send_option()/read_reply()/option() in the handshake;
request()/read_chunk()/reply()/replies() in transmission; wait_closed() to see
the server hang up. Run as a program, `nbdraw.py check SOCK EXPORT FILE` is a
well-behaved client that reads the export and compares it with FILE.
"""

import os
import socket
import struct
import subprocess
import sys
import threading
import time

# ---- protocol constants (names as in the NBD spec, without the NBD_ prefix) ----

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9

FLAG_FIXED_NEWSTYLE = 1 << 0          # handshake flags (server)
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0        # client flags
FLAG_C_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = 2**31 + 1
REP_ERR_POLICY = 2**31 + 2
REP_ERR_INVALID = 2**31 + 3
REP_ERR_PLATFORM = 2**31 + 4
REP_ERR_TLS_REQD = 2**31 + 5
REP_ERR_UNKNOWN = 2**31 + 6
REP_ERR_SHUTDOWN = 2**31 + 7
REP_ERR_BLOCK_SIZE_REQD = 2**31 + 8
REP_ERR_TOO_BIG = 2**31 + 9
REP_ERR_EXT_HEADER_REQD = 2**31 + 10

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

FLAG_HAS_FLAGS = 1 << 0               # transmission flags
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_ROTATIONAL = 1 << 4
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_RESIZE = 1 << 9
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11
FLAG_BLOCK_STATUS_PAYLOAD = 1 << 12

REQUEST_MAGIC = 0x25609513            # compact request, 28 bytes
EXT_REQUEST_MAGIC = 0x21E41C71        # extended request, 32 bytes
SIMPLE_REPLY_MAGIC = 0x67446698       # 16 bytes (+ READ data)
STRUCTURED_REPLY_MAGIC = 0x668E33EF   # 20 bytes + payload
EXT_REPLY_MAGIC = 0x6E8A278C          # 32 bytes + payload

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4
CMD_FLAG_PAYLOAD_LEN = 1 << 5

REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_BLOCK_STATUS_EXT = 6
REPLY_TYPE_ERROR = 2**15 + 1
REPLY_TYPE_ERROR_OFFSET = 2**15 + 2

STATE_HOLE = 1 << 0                   # base:allocation
STATE_ZERO = 1 << 1

EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN = 1, 5, 12, 22, 28, 75, 95, 108

MiB = 1 << 20


def rep_name(t):
    """A readable name for an option reply type (for messages)."""
    for k, v in globals().items():
        if k.startswith("REP_") and k != "REP_MAGIC" and v == t:
            return k
    return "%#x" % t


class Closed(Exception):
    """The server closed the connection."""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def check_string(b, what):
    """B is a protocol string: UTF-8, no NUL, at most 4096 bytes."""
    check(len(b) <= 4096, "%s: %d bytes, over the 4096-byte string limit" % (what, len(b)))
    check(b"\0" not in b, "%s: NUL in %r" % (what, b[:64]))
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError("%s: not UTF-8: %r" % (what, b[:64]))


def expect(got, want, what):
    """check() that GOT == WANT, naming reply types in the message."""
    if got != want:
        if isinstance(want, int) and want >= 2**31 or isinstance(got, int) and got >= 2**31:
            raise AssertionError("%s: got %s, expected %s" % (what, rep_name(got), rep_name(want)))
        raise AssertionError("%s: got %r, expected %r" % (what, got, want))


class OptReply(tuple):
    """One option reply: (opt, type, data)."""
    __slots__ = ()

    def __new__(cls, opt, rtype, data):
        return tuple.__new__(cls, (opt, rtype, data))

    opt = property(lambda self: self[0])
    type = property(lambda self: self[1])
    data = property(lambda self: self[2])

    def __repr__(self):
        return "OptReply(opt=%d, %s, %r)" % (self[0], rep_name(self[1]), self[2][:64])


class Chunk:
    """One reply message: a simple reply, or a structured or extended chunk.

    Always: magic, cookie, flags, type (None for a simple reply), done, error
    (0 if none), payload (the raw chunk payload; a simple READ reply's data).
    Extended chunks: offset (the header's offset field). Decoded by type:
      OFFSET_DATA: data_offset, data          OFFSET_HOLE: data_offset, hole_length
      BLOCK_STATUS(_EXT): context_id, extents [(length, flags)]
      ERROR(_OFFSET): error, msg (bytes), error_offset (ERROR_OFFSET only)
    """

    def __init__(self, magic, cookie, flags=REPLY_FLAG_DONE, rtype=None, offset=None, payload=b"", error=0):
        self.magic, self.cookie, self.flags, self.type = magic, cookie, flags, rtype
        self.offset, self.payload, self.error = offset, payload, error
        self.done = bool(flags & REPLY_FLAG_DONE)
        self.msg = b""
        self.data = b""
        self.data_offset = self.hole_length = self.context_id = self.extents = self.error_offset = None
        if rtype is None:                       # simple reply
            self.data = payload
        elif rtype == REPLY_TYPE_OFFSET_DATA:
            check(len(payload) >= 9, "OFFSET_DATA payload of %d bytes" % len(payload))
            self.data_offset, = struct.unpack(">Q", payload[:8])
            self.data = payload[8:]
        elif rtype == REPLY_TYPE_OFFSET_HOLE:
            check(len(payload) == 12, "OFFSET_HOLE payload of %d bytes" % len(payload))
            self.data_offset, self.hole_length = struct.unpack(">QI", payload)
        elif rtype == REPLY_TYPE_BLOCK_STATUS:
            check(len(payload) >= 12 and (len(payload) - 4) % 8 == 0,
                  "BLOCK_STATUS payload of %d bytes" % len(payload))
            self.context_id, = struct.unpack(">I", payload[:4])
            self.extents = [struct.unpack(">II", payload[i:i + 8]) for i in range(4, len(payload), 8)]
        elif rtype == REPLY_TYPE_BLOCK_STATUS_EXT:
            check(len(payload) >= 24 and (len(payload) - 8) % 16 == 0,
                  "BLOCK_STATUS_EXT payload of %d bytes" % len(payload))
            self.context_id, count = struct.unpack(">II", payload[:8])
            self.extents = [struct.unpack(">QQ", payload[i:i + 16]) for i in range(8, len(payload), 16)]
            check(count == len(self.extents), "BLOCK_STATUS_EXT count %d for %d descriptors"
                  % (count, len(self.extents)))
        elif rtype & 0x8000:                    # every error type starts alike
            check(len(payload) >= 6, "error chunk payload of %d bytes" % len(payload))
            self.error, mlen = struct.unpack(">IH", payload[:6])
            check(6 + mlen <= len(payload), "error message length %d beyond the chunk" % mlen)
            self.msg = payload[6:6 + mlen]
            check_string(self.msg, "error chunk message")
            if rtype == REPLY_TYPE_ERROR_OFFSET:
                check(len(payload) == 6 + mlen + 8, "ERROR_OFFSET payload of %d bytes" % len(payload))
                self.error_offset, = struct.unpack(">Q", payload[6 + mlen:])
            check(self.error != 0, "error chunk with error 0")
        elif rtype == REPLY_TYPE_NONE:
            check(len(payload) == 0 and self.done, "NONE chunk with a payload or without DONE")

    @property
    def simple(self):
        return self.type is None

    def __repr__(self):
        kind = {SIMPLE_REPLY_MAGIC: "simple", STRUCTURED_REPLY_MAGIC: "structured",
                EXT_REPLY_MAGIC: "extended"}.get(self.magic, hex(self.magic))
        return "<%s cookie=%#x type=%r flags=%#x error=%d offset=%r len=%d%s>" % (
            kind, self.cookie, self.type, self.flags, self.error, self.offset, len(self.payload),
            " msg=%r" % self.msg if self.msg else "")


class Client:
    """One connection. Timeouts are in seconds; a read that takes longer raises
    socket.timeout, and the server hanging up raises Closed."""

    def __init__(self, path=None, timeout=10.0):
        self.path = path or os.environ["SOCK"]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        self.timeout = timeout
        self.structured = False
        self.extended = False
        self.eflags = 0
        self.size = 0
        self.cookie = 0
        self.pending = {}       # cookie -> (cmd, length) of requests not yet fully answered

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- bytes ----

    def send(self, data, may_fail=False):
        """Send DATA. With MAY_FAIL, a server that has already hung up is not an
        error (for bytes sent after input the server may reject at once)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            if not may_fail:
                raise

    def recv(self, n):
        """Exactly N bytes; Closed if the server hangs up first."""
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed("server closed the connection after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def wait_closed(self, timeout=5.0):
        """Wait for the server to hang up; return what it sent before (b"" if
        nothing). AssertionError if it is still open after TIMEOUT seconds."""
        deadline = time.monotonic() + timeout
        got = bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                self.sock.settimeout(left)
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            raise AssertionError("the server did not close the connection within %.1f s "
                                 "(received %d bytes)" % (timeout, len(got)))
        except ConnectionResetError:
            pass
        finally:
            self.sock.settimeout(self.timeout)
        return bytes(got)

    def expect_closed(self, what, timeout=5.0):
        """The server hangs up within TIMEOUT without sending anything more."""
        got = self.wait_closed(timeout)
        check(got == b"", "%s: the server sent %r before closing" % (what, got[:64]))

    def is_closed(self, timeout=5.0):
        try:
            self.wait_closed(timeout)
            return True
        except AssertionError:
            return False

    def starttls(self, cafile, certfile=None, keyfile=None, hostname="localhost"):
        """NBD_OPT_STARTTLS, and on its ACK the TLS handshake (X.509, Python's
        ssl): from then on every byte goes through TLS. Returns the reply."""
        import ssl
        r = self.option(OPT_STARTTLS)
        if [x.type for x in r] != [REP_ACK]:
            return r
        ctx = ssl.create_default_context(cafile=cafile)
        if certfile:
            ctx.load_cert_chain(certfile, keyfile)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=hostname)
        return r

    # ---- handshake ----

    def read_greeting(self):
        """The 18-byte greeting; returns the handshake flags."""
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        expect(magic, NBDMAGIC, "greeting magic")
        expect(opt, IHAVEOPT, "greeting IHAVEOPT")
        return hflags

    def greeting(self, cflags=FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES):
        """Read the greeting (requiring FIXED_NEWSTYLE|NO_ZEROES) and send CFLAGS."""
        hflags = self.read_greeting()
        expect(hflags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, "handshake flags")
        self.send(struct.pack(">I", cflags))
        return hflags

    def send_option(self, opt, data=b"", magic=IHAVEOPT, length=None, may_fail=False):
        """Send one option header and DATA. LENGTH, if given, is what the header
        claims (it may lie: shorter or longer than DATA)."""
        if length is None:
            length = len(data)
        self.send(struct.pack(">QII", magic, opt, length) + data, may_fail)

    def read_reply(self):
        """One option reply."""
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv(20))
        expect(magic, REP_MAGIC, "option reply magic")
        data = self.recv(length) if length else b""
        if rtype & 2**31:
            check_string(data, "message of option reply %s" % rep_name(rtype))
        elif rtype == REP_ACK:
            expect(data, b"", "data with NBD_REP_ACK")
        return OptReply(opt, rtype, data)

    def option(self, opt, data=b""):
        """Send OPT and return its replies up to and including the final one
        (the first that is not SERVER, INFO or META_CONTEXT)."""
        self.send_option(opt, data)
        replies = []
        while True:
            r = self.read_reply()
            expect(r.opt, opt, "option of the reply")
            replies.append(r)
            if r.type not in (REP_SERVER, REP_INFO, REP_META_CONTEXT):
                return replies

    def option_final(self, opt, data=b""):
        """Send OPT; the type of its final reply."""
        return self.option(opt, data)[-1].type

    @staticmethod
    def info_data(name, infos=()):
        """Payload of NBD_OPT_INFO/GO."""
        n = name.encode() if isinstance(name, str) else name
        return (struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos))
                + b"".join(struct.pack(">H", i) for i in infos))

    @staticmethod
    def meta_data(name, queries):
        """Payload of NBD_OPT_LIST/SET_META_CONTEXT."""
        n = name.encode() if isinstance(name, str) else name
        out = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
        for q in queries:
            q = q.encode() if isinstance(q, str) else q
            out += struct.pack(">I", len(q)) + q
        return out

    def list_exports(self):
        """NBD_OPT_LIST: [(name, details)]."""
        replies = self.option(OPT_LIST)
        expect(replies[-1].type, REP_ACK, "NBD_OPT_LIST")
        out = []
        for r in replies[:-1]:
            expect(r.type, REP_SERVER, "NBD_OPT_LIST reply type")
            n, = struct.unpack(">I", r.data[:4])
            check(n <= len(r.data) - 4, "REP_SERVER name length beyond the reply")
            out.append((r.data[4:4 + n].decode(), r.data[4 + n:].decode()))
        return out

    def info(self, name="disk", infos=(INFO_BLOCK_SIZE,), opt=OPT_INFO):
        """NBD_OPT_INFO (or GO): (final type, {info type: payload after the type}).
        Each info type must appear at most once."""
        replies = self.option(opt, self.info_data(name, infos))
        out = {}
        for r in replies[:-1]:
            expect(r.type, REP_INFO, "reply before the final one")
            check(len(r.data) >= 2, "REP_INFO without a type")
            itype, = struct.unpack(">H", r.data[:2])
            check(itype not in out, "info %d sent twice" % itype)
            out[itype] = r.data[2:]
        final = replies[-1].type
        if final == REP_ACK:
            check(INFO_EXPORT in out, "success without NBD_INFO_EXPORT")
            expect(len(out[INFO_EXPORT]), 10, "NBD_INFO_EXPORT length")
            if INFO_BLOCK_SIZE in out:
                expect(len(out[INFO_BLOCK_SIZE]), 12, "NBD_INFO_BLOCK_SIZE length")
        return final, out

    @staticmethod
    def export_info(infos):
        """(size, transmission flags) from an info() dict."""
        return struct.unpack(">QH", infos[INFO_EXPORT])

    def go(self, name="disk", infos=(INFO_BLOCK_SIZE,)):
        """NBD_OPT_GO, which must succeed; then in transmission."""
        final, infos = self.info(name, infos, opt=OPT_GO)
        expect(final, REP_ACK, "NBD_OPT_GO %r" % name)
        self.size, self.eflags = self.export_info(infos)
        return infos

    def export_name(self, name="disk", no_zeroes=True):
        """NBD_OPT_EXPORT_NAME, which must succeed; then in transmission."""
        self.send_option(OPT_EXPORT_NAME, name.encode())
        self.size, self.eflags = struct.unpack(">QH", self.recv(10))
        if not no_zeroes:
            expect(self.recv(124), bytes(124), "the 124 zero bytes")

    def structured_reply(self):
        expect(self.option_final(OPT_STRUCTURED_REPLY), REP_ACK, "NBD_OPT_STRUCTURED_REPLY")
        self.structured = True

    def extended_headers(self):
        expect(self.option_final(OPT_EXTENDED_HEADERS), REP_ACK, "NBD_OPT_EXTENDED_HEADERS")
        self.extended = True

    def meta_context(self, opt, name, queries):
        """LIST or SET_META_CONTEXT: (final type, [(id, context name)])."""
        replies = self.option(opt, self.meta_data(name, queries))
        out = []
        for r in replies[:-1]:
            expect(r.type, REP_META_CONTEXT, "reply before the final one")
            check(len(r.data) > 4, "REP_META_CONTEXT without a name")
            cid, = struct.unpack(">I", r.data[:4])
            out.append((cid, r.data[4:].decode()))
        return replies[-1].type, out

    def list_meta(self, name, queries):
        final, ctx = self.meta_context(OPT_LIST_META_CONTEXT, name, queries)
        expect(final, REP_ACK, "NBD_OPT_LIST_META_CONTEXT %r" % (queries,))
        return [n for _, n in ctx]

    def set_meta(self, name, queries):
        """SET_META_CONTEXT, which must succeed: {context name: id}."""
        final, ctx = self.meta_context(OPT_SET_META_CONTEXT, name, queries)
        expect(final, REP_ACK, "NBD_OPT_SET_META_CONTEXT %r" % (queries,))
        out = {}
        for cid, n in ctx:
            check(n not in out, "context %s selected twice" % n)
            out[n] = cid
        return out

    def connect(self, name="disk", structured=True, extended=False, meta=None):
        """Greeting, STRUCTURED_REPLY or EXTENDED_HEADERS, SET_META_CONTEXT of
        META (a list of queries) if given, GO. Returns the selected contexts."""
        self.greeting()
        if extended:
            self.extended_headers()
        elif structured:
            self.structured_reply()
        ctx = self.set_meta(name, meta) if meta else {}
        self.go(name)
        return ctx

    # ---- transmission ----

    def header(self, cmd, offset=0, length=0, flags=0, cookie=None, magic=None, extended=None):
        """The bytes of one request header (compact or extended as negotiated,
        unless EXTENDED says otherwise), and its cookie."""
        if cookie is None:
            self.cookie += 1
            cookie = self.cookie
        if extended is None:
            extended = self.extended
        if extended:
            hdr = struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC if magic is None else magic,
                              flags, cmd, cookie, offset, length)
        else:
            hdr = struct.pack(">IHHQQI", REQUEST_MAGIC if magic is None else magic,
                              flags, cmd, cookie, offset, length)
        return hdr, cookie

    def request(self, cmd, offset=0, length=0, flags=0, payload=b"", cookie=None, magic=None, may_fail=False):
        """Send one request header with PAYLOAD behind it; returns the cookie."""
        hdr, cookie = self.header(cmd, offset, length, flags, cookie, magic)
        self.pending[cookie] = (cmd, length)
        self.send(hdr + payload, may_fail)
        return cookie

    def read_chunk(self):
        """One reply message (a Chunk). A simple reply to a pending READ that
        succeeded carries the READ's data."""
        magic, = struct.unpack(">I", self.recv(4))
        if magic == SIMPLE_REPLY_MAGIC:
            error, cookie = struct.unpack(">IQ", self.recv(12))
            cmd, length = self.pending.pop(cookie, (None, 0))
            data = self.recv(length) if cmd == CMD_READ and error == 0 and length else b""
            return Chunk(magic, cookie, payload=data, error=error)
        if magic == STRUCTURED_REPLY_MAGIC:
            flags, rtype, cookie, length = struct.unpack(">HHQI", self.recv(16))
            offset = None
        elif magic == EXT_REPLY_MAGIC:
            flags, rtype, cookie, offset, length = struct.unpack(">HHQQQ", self.recv(28))
            check(length < 2**32, "extended reply length %d" % length)
        else:
            raise AssertionError("bad reply magic %#x" % magic)
        ch = Chunk(magic, cookie, flags, rtype, offset, self.recv(length) if length else b"")
        if ch.done:
            self.pending.pop(cookie, None)
        return ch

    def reply(self, cookie):
        """All chunks of the reply to COOKIE (with one request in flight)."""
        chunks = []
        while True:
            ch = self.read_chunk()
            expect(ch.cookie, cookie, "reply cookie")
            chunks.append(ch)
            if ch.done:
                return chunks

    def replies(self, cookies):
        """Read until every cookie in COOKIES has had its final chunk; chunks may
        come in any order. Returns {cookie: [chunks]}; fails on an unknown cookie
        or a chunk after a cookie's final one."""
        want = set(cookies)
        got = {c: [] for c in want}
        done = set()
        while done != want:
            ch = self.read_chunk()
            check(ch.cookie in want, "reply for cookie %#x, which is not in flight" % ch.cookie)
            check(ch.cookie not in done, "chunk for cookie %#x after its final chunk" % ch.cookie)
            got[ch.cookie].append(ch)
            if ch.done:
                done.add(ch.cookie)
        return got

    def pipeline(self, requests):
        """Send REQUESTS (dicts of request() arguments) from a second thread while
        reading the replies here, so neither side blocks on a full socket.
        Returns (cookies in order sent, {cookie: [chunks]})."""
        blobs, cookies = [], []
        for r in requests:
            r = dict(r)
            payload = r.pop("payload", b"")
            hdr, cookie = self.header(**r)
            self.pending[cookie] = (r["cmd"], r.get("length", 0))
            blobs.append(hdr + payload)
            cookies.append(cookie)
        check(len(set(cookies)) == len(cookies), "cookies in one pipeline must differ")
        err = []

        def sender():
            try:
                for b in blobs:
                    self.send(b)
            except Exception as e:  # noqa: BLE001 - reported by the reader
                err.append(e)
        t = threading.Thread(target=sender)
        t.start()
        try:
            got = self.replies(cookies)
        finally:
            t.join()
        check(not err, "sending the pipeline failed: %r" % err)
        return cookies, got

    @staticmethod
    def error_of(chunks):
        """The first nonzero error of a reply (0 if none)."""
        for ch in chunks:
            if ch.error:
                return ch.error
        return 0

    def cmd(self, cmd, offset=0, length=0, flags=0, payload=b""):
        """Send one request and read its reply: (error, chunks)."""
        cookie = self.request(cmd, offset, length, flags, payload)
        chunks = self.reply(cookie)
        return self.error_of(chunks), chunks

    @staticmethod
    def assemble(offset, length, chunks):
        """The bytes a successful READ reply describes (holes as zeroes); checks
        that the content chunks cover the request exactly, without overlap."""
        buf = bytearray(length)
        covered = []
        for ch in chunks:
            if ch.simple:
                expect(len(ch.data), length, "simple READ reply length")
                return bytes(ch.data)
            if ch.type == REPLY_TYPE_OFFSET_DATA:
                start, n = ch.data_offset, len(ch.data)
                buf[start - offset:start - offset + n] = ch.data
            elif ch.type == REPLY_TYPE_OFFSET_HOLE:
                start, n = ch.data_offset, ch.hole_length
                check(n > 0, "empty hole chunk")
            else:
                continue
            check(offset <= start and start + n <= offset + length,
                  "content chunk %d+%d outside the request %d+%d" % (start, n, offset, length))
            covered.append((start, n))
        covered.sort()
        pos = offset
        for start, n in covered:
            check(start == pos, "content chunks leave a gap or overlap at %d (next chunk at %d)" % (pos, start))
            pos += n
        expect(pos, offset + length, "end of the content chunks")
        return bytes(buf)

    def read(self, offset, length, flags=0):
        """READ: (error, data) with holes filled in; data is None on error."""
        err, chunks = self.cmd(CMD_READ, offset, length, flags)
        if err:
            return err, None
        return 0, self.assemble(offset, length, chunks)

    def write(self, offset, data, flags=0):
        """WRITE (with PAYLOAD_LEN under extended headers): the error."""
        if self.extended:
            flags |= CMD_FLAG_PAYLOAD_LEN
        return self.cmd(CMD_WRITE, offset, len(data), flags, data)[0]

    def disconnect(self):
        """NBD_CMD_DISC (no reply)."""
        self.request(CMD_DISC)


# ---- helpers for test scripts ----

def rss_kib(pid, field="VmRSS"):
    """A memory figure of process PID from /proc/PID/status, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def file_bytes(path, offset=0, length=None):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read() if length is None else f.read(length)


def well_behaved(sock, export, path):
    """A well-behaved client: GO, READ at the start, the middle and the end of
    the export, compare with the file at PATH; the same in the other reply modes."""
    size = os.path.getsize(path)
    spots = sorted({0, size // 2 // 4096 * 4096, max(0, size - 65536)})
    for mode in ("simple", "structured", "extended"):
        with Client(sock) as c:
            c.connect(export, structured=mode == "structured", extended=mode == "extended")
            expect(c.size, size, "export size")
            for off in spots:
                n = min(65536, size - off)
                err, data = c.read(off, n)
                expect(err, 0, "well-behaved READ at %d (%s)" % (off, mode))
                check(data == file_bytes(path, off, n), "well-behaved READ at %d (%s): data differs" % (off, mode))
            c.disconnect()
            c.expect_closed("NBD_CMD_DISC")


class Daemon:
    """bdfilterd in the foreground on a Unix socket in DIR, for Python-only
    tests. main() stops every daemon a test started, and fails the test if one
    did not exit cleanly."""

    running = []

    def __init__(self, tmpdir, devices, extra=()):
        self.sock = os.path.join(tmpdir, "nbd.sock")
        self.log = open(os.path.join(tmpdir, "bdfilterd.log"), "w")
        self.control = os.path.join(tmpdir, "control.sock")
        args = [os.environ["BDFILTERD"], "--foreground", "--nbd-listen", "unix:" + self.sock,
                "--control", self.control]
        for d in devices:
            args += ["--device", d]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        # Both sockets: the NBD one can come first (control_bad.py once
        # connected to the control socket before it was there, under ASan).
        for _ in range(600):
            if os.path.exists(self.sock) and os.path.exists(self.control):
                break
            check(self.proc.poll() is None, "bdfilterd exited at start")
            time.sleep(0.05)
        check(os.path.exists(self.sock), "socket did not appear")
        check(os.path.exists(self.control), "control socket did not appear")
        Daemon.running.append(self)

    def client(self, timeout=10.0):
        return Client(self.sock, timeout)

    def alive(self):
        check(self.proc.poll() is None, "bdfilterd died (status %r)" % self.proc.poll())
        # and it still serves a well-behaved client
        c = self.client()
        c.connect()
        err, _ = c.read(0, 512)
        check(err == 0, "a well-behaved client failed to read")
        c.disconnect()
        c.close()

    def stop(self):
        if self in Daemon.running:
            Daemon.running.remove(self)
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("bdfilterd did not stop within 20 s of SIGTERM")
        check(rc == 0, "bdfilterd exited with %d on SIGTERM" % rc)


def main(tests):
    """Run TESTS (name -> function(tmpdir)); print one line each; exit 1 on failure."""
    import tempfile
    failed = 0
    only = sys.argv[1:]
    for name, fn in tests:
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory(prefix="bdf-raw.") as tmp:
            t0 = time.time()
            try:
                try:
                    fn(tmp)
                finally:
                    while Daemon.running:
                        Daemon.running[0].stop()
                print("ok   %s (%.1fs)" % (name, time.time() - t0))
            except Exception as e:  # noqa: BLE001 - report every failure the same way
                failed += 1
                print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
                log = os.path.join(tmp, "bdfilterd.log")
                if os.path.exists(log):
                    print("---- daemon log:")
                    print(open(log).read()[-3000:])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "check":
        well_behaved(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: nbdraw.py check SOCK EXPORT FILE")
