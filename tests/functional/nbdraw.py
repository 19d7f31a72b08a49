"""A raw NBD client for tests: sends exactly the bytes a test wants, valid or not,
and decodes what the server answers. Standard library only."""

import os
import socket
import struct
import subprocess
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9

FLAG_C_FIXED_NEWSTYLE = 1
FLAG_C_NO_ZEROES = 2

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
REP_ERR_UNKNOWN = 2**31 + 6
REP_ERR_TOO_BIG = 2**31 + 9
REP_ERR_EXT_HEADER_REQD = 2**31 + 10

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11

REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
EXT_REPLY_MAGIC = 0x6E8A278C

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

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_BLOCK_STATUS_EXT = 6
REPLY_TYPE_ERROR = 2**15 + 1
REPLY_TYPE_ERROR_OFFSET = 2**15 + 2

EPERM, EIO, EINVAL, ENOSPC, ENOTSUP = 1, 5, 22, 28, 95


class Closed(Exception):
    """The server closed the connection."""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Client:
    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.structured = False
        self.extended = False
        self.eflags = 0
        self.size = 0
        self.cookie = 0

    def close(self):
        self.sock.close()

    # ---- bytes ----
    def send(self, data):
        self.sock.sendall(data)

    def recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed("server closed the connection")
            buf += chunk
        return buf

    def is_closed(self, timeout=5.0):
        """True if the server closes the connection within TIMEOUT (data is drained)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    # ---- handshake ----
    def greeting(self, cflags=FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES):
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        check(magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting")
        check(hflags == 3, "handshake flags %#x" % hflags)
        self.send(struct.pack(">I", cflags))
        return hflags

    def send_option(self, opt, data=b"", magic=IHAVEOPT, length=None):
        if length is None:
            length = len(data)
        self.send(struct.pack(">QII", magic, opt, length) + data)

    def read_reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv(20))
        check(magic == REP_MAGIC, "bad option reply magic %#x" % magic)
        data = self.recv(length) if length else b""
        return opt, rtype, data

    def option(self, opt, data=b""):
        """Send OPT; return the list of (type, data) replies up to the final one."""
        self.send_option(opt, data)
        replies = []
        while True:
            ropt, rtype, rdata = self.read_reply()
            check(ropt == opt, "reply for option %d, expected %d" % (ropt, opt))
            replies.append((rtype, rdata))
            if rtype not in (REP_SERVER, REP_INFO, REP_META_CONTEXT):
                return replies

    def option_final(self, opt, data=b""):
        return self.option(opt, data)[-1][0]

    @staticmethod
    def info_data(name, infos=()):
        n = name.encode()
        return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + b"".join(
            struct.pack(">H", i) for i in infos)

    @staticmethod
    def meta_data(name, queries):
        n = name.encode()
        out = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
        for q in queries:
            out += struct.pack(">I", len(q.encode())) + q.encode()
        return out

    def structured_reply(self):
        check(self.option_final(OPT_STRUCTURED_REPLY) == REP_ACK, "STRUCTURED_REPLY refused")
        self.structured = True

    def extended_headers(self):
        check(self.option_final(OPT_EXTENDED_HEADERS) == REP_ACK, "EXTENDED_HEADERS refused")
        self.extended = True

    def set_meta(self, name, queries):
        replies = self.option(OPT_SET_META_CONTEXT, self.meta_data(name, queries))
        check(replies[-1][0] == REP_ACK, "SET_META_CONTEXT: %r" % (replies[-1],))
        ctx = {}
        for rtype, data in replies[:-1]:
            check(rtype == REP_META_CONTEXT, "unexpected reply %d" % rtype)
            cid, = struct.unpack(">I", data[:4])
            ctx[data[4:].decode()] = cid
        return ctx

    def go(self, name="disk", infos=(INFO_BLOCK_SIZE,)):
        replies = self.option(OPT_GO, self.info_data(name, infos))
        check(replies[-1][0] == REP_ACK, "GO failed: %r" % (replies[-1],))
        for rtype, data in replies[:-1]:
            itype, = struct.unpack(">H", data[:2])
            if itype == INFO_EXPORT:
                self.size, self.eflags = struct.unpack(">QH", data[2:12])
        return replies

    def connect(self, name="disk", structured=True, extended=False, meta=None):
        self.greeting()
        if extended:
            self.extended_headers()
        elif structured:
            self.structured_reply()
        ctx = self.set_meta(name, meta) if meta else {}
        self.go(name)
        return ctx

    # ---- transmission ----
    def request(self, cmd, offset=0, length=0, flags=0, payload=b"", cookie=None, magic=None):
        if cookie is None:
            self.cookie += 1
            cookie = self.cookie
        if self.extended:
            hdr = struct.pack(">IHHQQQ", magic or EXT_REQUEST_MAGIC, flags, cmd, cookie, offset, length)
        else:
            hdr = struct.pack(">IHHQQI", magic or REQUEST_MAGIC, flags, cmd, cookie, offset, length)
        self.send(hdr + payload)
        return cookie

    def read_chunk(self):
        """One reply message: a dict with magic, cookie, flags, type, error, data."""
        magic, = struct.unpack(">I", self.recv(4))
        if magic == SIMPLE_REPLY_MAGIC:
            error, cookie = struct.unpack(">IQ", self.recv(12))
            return {"magic": magic, "cookie": cookie, "error": error, "done": True, "type": None, "data": b""}
        if magic == STRUCTURED_REPLY_MAGIC:
            flags, rtype, cookie, length = struct.unpack(">HHQI", self.recv(16))
            offset = None
        elif magic == EXT_REPLY_MAGIC:
            flags, rtype, cookie, offset, length = struct.unpack(">HHQQQ", self.recv(28))
        else:
            raise AssertionError("bad reply magic %#x" % magic)
        data = self.recv(length) if length else b""
        error = 0
        msg = b""
        if rtype & 0x8000:
            error, mlen = struct.unpack(">IH", data[:6])
            msg = data[6:6 + mlen]
        return {"magic": magic, "cookie": cookie, "flags": flags, "type": rtype, "offset": offset,
                "error": error, "msg": msg, "done": bool(flags & REPLY_FLAG_DONE), "data": data}

    def read_reply_for(self, cookie, read_len=None):
        """All chunks of one reply (requests sent one at a time). For a simple READ
        reply, READ_LEN bytes of data follow."""
        chunks = []
        while True:
            c = self.read_chunk()
            check(c["cookie"] == cookie, "reply for cookie %d, expected %d" % (c["cookie"], cookie))
            if c["type"] is None and read_len and c["error"] == 0:
                c["data"] = self.recv(read_len)
            chunks.append(c)
            if c["done"]:
                return chunks

    def cmd(self, cmd, offset=0, length=0, flags=0, payload=b""):
        """Send a request and return (error, chunks)."""
        read_len = length if cmd == CMD_READ and not (self.structured or self.extended) else None
        cookie = self.request(cmd, offset, length, flags, payload)
        chunks = self.read_reply_for(cookie, read_len)
        errors = [c["error"] for c in chunks if c["error"]]
        return (errors[0] if errors else 0), chunks

    def read(self, offset, length, flags=0):
        """READ; returns (error, bytes) with holes filled in."""
        err, chunks = self.cmd(CMD_READ, offset, length, flags)
        if err:
            return err, None
        buf = bytearray(length)
        for c in chunks:
            if c["type"] is None:
                buf[:] = c["data"]
            elif c["type"] == REPLY_TYPE_OFFSET_DATA:
                off, = struct.unpack(">Q", c["data"][:8])
                d = c["data"][8:]
                buf[off - offset:off - offset + len(d)] = d
            elif c["type"] == REPLY_TYPE_OFFSET_HOLE:
                off, hl = struct.unpack(">QI", c["data"][:12])
                buf[off - offset:off - offset + hl] = bytes(hl)
        return 0, bytes(buf)

    def write(self, offset, data, flags=0):
        if self.extended:
            flags |= CMD_FLAG_PAYLOAD_LEN
        err, _ = self.cmd(CMD_WRITE, offset, len(data), flags, data)
        return err

    def disconnect(self):
        self.request(CMD_DISC)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Daemon:
    """bdfilterd in the foreground on a Unix socket in DIR. main() stops every
    daemon a test started, and fails the test if one did not exit cleanly."""

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
        for _ in range(200):
            if os.path.exists(self.sock):
                break
            check(self.proc.poll() is None, "bdfilterd exited at start")
            time.sleep(0.05)
        check(os.path.exists(self.sock), "socket did not appear")
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
