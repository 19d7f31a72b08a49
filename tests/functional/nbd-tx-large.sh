#!/bin/bash
# Transmission: READ and WRITE over the 32 MiB maximum payload. A client that
# did not negotiate block sizes (EXPORT_NAME, or a GO without
# NBD_INFO_BLOCK_SIZE) may not know the limit, so up to 64 MiB is served, in
# 32 MiB pieces:
# - 64 MiB written and read back in every reply mode (simple, structured,
#   extended), the same bytes in the file; structured replies send no content
#   chunk over 32 MiB, DF ones exactly one; a hole across the pieces' boundary
#   comes back as a hole; FUA;
# - large simple replies pipelined with small requests: none is torn;
# - a client that asked for NBD_INFO_BLOCK_SIZE in its GO (not in an INFO
#   before it) still gets EINVAL over 32 MiB, and every client over 64 MiB
#   (a refused WRITE's payload is dropped, the stream stays in sync, nothing is
#   written); read-only and out-of-range large WRITEs get EPERM and ENOSPC;
# - libnbd (Debian 12's) reads and writes 64 MiB when it did not ask for the
#   block sizes;
# - several clients pipelining 64 MiB requests keep the daemon's peak RSS under
#   --max-inflight plus a fixed allowance;
# - a store that fails in the second piece: a large WRITE gets one ENOSPC
#   after its whole payload, the first piece is in the file; a READ gets an
#   error chunk (structured: after a 32 MiB data chunk; DF: after the one chunk,
#   padded with zeroes) or, simple, a hard disconnect after the first 32 MiB,
#   as the spec demands once the header said success.
# The daemon lives and serves a well-behaved client after each part.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
mkimage "$DISK" 160
# Two pieces in memory at once over all connections, one per connection.
INFLIGHT_MIB=64
export INFLIGHT_MIB
nbd_start --threads 4 --max-inflight "${INFLIGHT_MIB}M" --max-inflight-per-conn 32M
# The clients (not the daemon) move hundreds of MiB: let their malloc reuse
# its memory rather than map fresh pages for every 64 MiB buffer, which costs
# seconds each on a loaded machine.
PYFAST="env MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296 $PY"

$PYFAST - <<'EOF' || fail "64 MiB requests"
from nbdraw import *

path = os.environ["DISK"]
N = 64 * MiB                # the largest served
L = 40 * MiB                # two pieces too, and cheaper to move
P = 32 * MiB                # a piece
OFF = 5 * MiB + 4096        # the pieces fall on no piece boundary
disk = bytearray(file_bytes(path))
size = len(disk)


def plain(mode, name="disk"):
    """A client that did not negotiate block sizes: EXPORT_NAME, or (extended
    headers allow no EXPORT_NAME) a GO without NBD_INFO_BLOCK_SIZE."""
    c = Client(timeout=120)
    c.greeting()
    if mode == "extended":
        c.extended_headers()
        c.go(name, infos=(INFO_NAME,))
        return c
    if mode == "structured":
        c.structured_reply()
    c.export_name(name)
    return c


def same_file(what):
    check(file_bytes(path) == disk, "%s: the file differs from what was written" % what)


for mode in ("simple", "structured", "extended"):
    with plain(mode) as c:
        data = os.urandom(N)
        flags = CMD_FLAG_FUA if mode == "extended" else 0
        expect(c.write(OFF, data, flags), 0, "%s: WRITE of 64 MiB" % mode)
        disk[OFF:OFF + N] = data
        err, chunks = c.cmd(CMD_READ, OFF, N)
        expect(err, 0, "%s: READ of 64 MiB" % mode)
        check(Client.assemble(OFF, N, chunks) == data, "%s: READ of 64 MiB: data differs" % mode)
        if mode != "simple":
            for ch in chunks:
                check(len(ch.data) <= P, "%s: a content chunk of %d bytes" % (mode, len(ch.data)))
            err, chunks = c.cmd(CMD_READ, OFF, N, CMD_FLAG_DF)
            expect(err, 0, "%s: DF READ of 64 MiB" % mode)
            expect([ch.type for ch in chunks], [REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_NONE],
                   "%s: DF READ: one data chunk, then the end" % mode)
            check(Client.assemble(OFF, N, chunks) == data, "%s: DF READ: data differs" % mode)
        # Over 64 MiB: refused as before, in sync.
        expect(c.cmd(CMD_READ, OFF, N + 1)[0], EINVAL, "%s: READ of 64 MiB + 1" % mode)
        expect(c.read(OFF, 4096), (0, data[:4096]), "%s: in sync after 64 MiB + 1" % mode)
same_file("after the 64 MiB WRITEs")

with plain("simple") as c:
    # The payload is dropped, and nothing written.
    expect(c.write(OFF, os.urandom(N + 1)), EINVAL, "WRITE of 64 MiB + 1")
    # Refused before any piece reaches the store.
    expect(c.write(size - P, os.urandom(L)), ENOSPC, "large WRITE past the end")
    expect(c.cmd(CMD_READ, size - P, L)[0], EINVAL, "large READ past the end")
    expect(c.read(0, 4096), (0, bytes(disk[:4096])), "in sync after the refused WRITEs")
same_file("after the refused WRITEs")
with plain("simple", "ro") as c:
    expect(c.write(0, os.urandom(L)), EPERM, "large WRITE to the read-only export")
    expect(c.read(0, 4096), (0, file_bytes(os.environ["RO"], 0, 4096)), "read-only: in sync")

# A hole across the pieces' boundary: an OFFSET_HOLE chunk; zeroes with DF.
with plain("structured") as c:
    if c.eflags & FLAG_SEND_TRIM:
        hole = OFF + P - MiB + 4096
        expect(c.cmd(CMD_TRIM, hole, 2 * MiB)[0], 0, "TRIM across the boundary")
        disk[hole:hole + 2 * MiB] = bytes(2 * MiB)
        err, chunks = c.cmd(CMD_READ, OFF, L)
        expect(err, 0, "READ over the hole")
        check(Client.assemble(OFF, L, chunks) == disk[OFF:OFF + L], "READ over the hole: data differs")
        check(any(ch.type == REPLY_TYPE_OFFSET_HOLE for ch in chunks), "no OFFSET_HOLE chunk: %r" % chunks)
        err, chunks = c.cmd(CMD_READ, OFF, L, CMD_FLAG_DF)
        expect([ch.type for ch in chunks], [REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_NONE], "DF READ over the hole")
        check(Client.assemble(OFF, L, chunks) == disk[OFF:OFF + L], "DF READ over the hole: data differs")
    else:
        print("# no TRIM on this export: the hole is not checked")

# A simple reply carries no length: one torn by another reply desyncs the
# stream. Large READs pipelined with small requests, on four workers.
for mode in ("simple", "structured"):
    with plain(mode) as c:
        small = os.urandom(4096)
        reqs = [dict(cmd=CMD_READ, offset=OFF, length=L),
                dict(cmd=CMD_READ, offset=0, length=4096),
                dict(cmd=CMD_WRITE, offset=4096, length=4096, payload=small),
                dict(cmd=CMD_READ, offset=OFF + L - 4096, length=4096),
                dict(cmd=CMD_READ, offset=MiB, length=L,
                     flags=CMD_FLAG_DF if mode == "structured" else 0),
                dict(cmd=CMD_READ, offset=8192, length=4096)]
        disk[4096:8192] = small
        cookies, got = c.pipeline(reqs)
        for r, cookie in zip(reqs, cookies):
            expect(Client.error_of(got[cookie]), 0, "%s: pipelined %r" % (mode, r["cmd"]))
            if r["cmd"] == CMD_READ:    # none overlaps the WRITE
                o, n = r["offset"], r["length"]
                check(Client.assemble(o, n, got[cookie]) == disk[o:o + n],
                      "%s: pipelined READ at %d: data differs" % (mode, o))

# A client that asked for NBD_INFO_BLOCK_SIZE in its GO keeps to 32 MiB
# (nbd-tx-oversized.sh has the rest).
for mode in ("simple", "structured", "extended"):
    with Client(timeout=120) as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        for n in (33 * MiB, N):
            expect(c.cmd(CMD_READ, 0, n)[0], EINVAL, "%s, negotiated: READ of %d MiB" % (mode, n // MiB))
        if mode == "extended":
            expect(c.write(0, os.urandom(L)), EINVAL, "%s, negotiated: large WRITE" % mode)
        expect(c.read(0, 4096), (0, bytes(disk[:4096])), "%s, negotiated: in sync" % mode)
# Commands without a payload are not affected.
with Client(timeout=120) as c:
    c.connect()
    if c.eflags & FLAG_SEND_WRITE_ZEROES:
        expect(c.cmd(CMD_WRITE_ZEROES, MiB, 65 * MiB, CMD_FLAG_NO_HOLE)[0], 0, "WRITE_ZEROES of 65 MiB")
        disk[MiB:66 * MiB] = bytes(65 * MiB)
same_file("after the negotiated clients")

# Only the GO counts: an INFO that asked for the block sizes binds nothing,
# a GO that asked does.
with Client(timeout=120) as c:
    c.greeting()
    c.structured_reply()
    expect(c.info("disk", (INFO_BLOCK_SIZE,))[0], REP_ACK, "NBD_OPT_INFO")
    c.go("disk", infos=())
    err, data = c.read(OFF, L)
    expect(err, 0, "INFO with block sizes, GO without: a large READ")
    check(data == disk[OFF:OFF + L], "INFO with block sizes, GO without: data differs")
with Client(timeout=120) as c:
    c.greeting()
    c.structured_reply()
    expect(c.info("disk", ())[0], REP_ACK, "NBD_OPT_INFO")
    c.go("disk", infos=(INFO_BLOCK_SIZE,))
    expect(c.read(OFF, L)[0], EINVAL, "INFO without block sizes, GO with: a large READ")
EOF

# Newer libnbd will not send more than the maximum a server advertised;
# Debian 12's (1.14) does, when it did not ask for the block sizes.
$PYFAST - <<'EOF' || fail "libnbd"
import os
try:
    import nbd
except ImportError:
    print("# no python3-libnbd: skipped")
    raise SystemExit(0)
from nbdraw import MiB, check, file_bytes

h = nbd.NBD()
if not hasattr(h, "set_request_block_size"):
    print("# libnbd without set_request_block_size: skipped")
    raise SystemExit(0)
h.set_request_block_size(False)
h.connect_unix(os.environ["SOCK"])
data = os.urandom(64 * MiB)
try:
    h.pwrite(data, 3 * MiB)
except nbd.Error as e:
    if e.errno == 34:   # ERANGE: libnbd itself would not send it
        print("# this libnbd will not send 64 MiB: skipped")
        raise SystemExit(0)
    raise
check(h.pread(64 * MiB, 3 * MiB) == data, "libnbd: 64 MiB READ differs")
h.flush()
h.shutdown()
check(file_bytes(os.environ["DISK"], 3 * MiB, 64 * MiB) == data, "libnbd: 64 MiB WRITE not in the file")
EOF

$PYFAST - <<'EOF' || fail "memory bound"
from nbdraw import *

pid = int(os.environ["BDF_PID"])
path = os.environ["DISK"]
N = 64 * MiB
# As in nbd-limit-memory.sh: what the daemon holds besides payloads.
allowance_kib = 64 * 1024
bound_kib = int(os.environ["INFLIGHT_MIB"]) * 1024 + allowance_kib
data = [file_bytes(path, 0, N), file_bytes(path, N, N)]

# Three clients, each a 64 MiB WRITE of what the file holds (so the READs
# still match it) and a 64 MiB READ, sent before any reply is read. Were each
# request served from one buffer, that would be 3 x 2 x 64 MiB.
work = []
for i in range(3):
    c = Client(timeout=300)
    c.greeting()
    if i % 2:
        c.structured_reply()
    c.export_name("disk")
    whdr, wcookie = c.header(CMD_WRITE, 0, N)
    c.pending[wcookie] = (CMD_WRITE, N)
    rhdr, rcookie = c.header(CMD_READ, N, N)
    c.pending[rcookie] = (CMD_READ, N)
    want = {wcookie: None, rcookie: 1}
    err = []

    def send_all(c=c, blobs=(whdr, data[0], rhdr), err=err):
        try:
            for b in blobs:
                c.send(b)
        except Exception as e:  # noqa: BLE001 - reported below
            err.append(e)
    t = threading.Thread(target=send_all)
    t.start()
    work.append((c, t, want, err))

time.sleep(3)
check(os.path.exists("/proc/%d" % pid), "bdfilterd died under the 64 MiB requests")
stalled = rss_kib(pid, "VmHWM")
print("# peak RSS while stalled %d MiB (bound %d MiB)" % (stalled // 1024, bound_kib // 1024))
check(stalled <= bound_kib, "peak RSS %d MiB over the bound of %d MiB" % (stalled // 1024, bound_kib // 1024))


def drain(c, want, out):
    try:
        out.append(c.replies(list(want)))
    except Exception as e:  # noqa: BLE001 - reported below
        out.append(e)


readers = []
for c, t, want, err in work:
    out = []
    r = threading.Thread(target=drain, args=(c, want, out))
    r.start()
    readers.append((r, out))
for (c, t, want, err), (r, out) in zip(work, readers):
    r.join()
    t.join()
    check(not err, "sending failed: %r" % err)
    check(not isinstance(out[0], Exception), "reading the replies failed: %r" % out[0])
    for cookie, chunks in out[0].items():
        expect(Client.error_of(chunks), 0, "reply to cookie %d" % cookie)
        if want[cookie] is not None:
            check(Client.assemble(N, N, chunks) == data[1], "64 MiB READ data differs")
    c.close()
hwm = rss_kib(pid, "VmHWM")
print("# peak RSS after the replies %d MiB" % (hwm // 1024))
check(hwm <= bound_kib, "peak RSS %d MiB over the bound of %d MiB" % (hwm // 1024, bound_kib // 1024))
EOF

nbd_done

# A store that fails in a request's second piece: writes from 100 MiB on fail
# with EFBIG (RLIMIT_FSIZE, with SIGXFSZ ignored), and once the file is cut to
# 80 MiB, reads past it fail with EIO (the daemon still serves 160 MiB).
rm -f "$SOCK"
old_fsize=$(ulimit -S -f)
trap '' XFSZ
ulimit -S -f $((100 * 1024))
bdf_start --device "disk=$DISK"
ulimit -S -f "$old_fsize"
trap - XFSZ

$PYFAST - <<'EOF' || fail "a store failing in the second piece"
from nbdraw import *

path = os.environ["DISK"]
L = 40 * MiB
P = 32 * MiB
before = file_bytes(path)


def plain(mode):
    c = Client(timeout=120)
    c.greeting()
    if mode == "extended":
        c.extended_headers()
        c.go("disk", infos=())
        return c
    if mode == "structured":
        c.structured_reply()
    c.export_name("disk")
    return c


# A WRITE at 64 MiB: the first piece, [64, 96) MiB, is stored; the second
# fails at 100 MiB; one ENOSPC (EFBIG) once the whole payload is read.
for mode in ("simple", "extended"):
    with plain(mode) as c:
        data = os.urandom(L)
        expect(c.write(64 * MiB, data), ENOSPC, "%s: WRITE failing in its second piece" % mode)
        expect(c.read(0, 4096), (0, before[:4096]), "%s: in sync after the failed WRITE" % mode)
        check(file_bytes(path, 64 * MiB, P) == data[:P], "%s: the first piece is not in the file" % mode)
        check(file_bytes(path, 0, 64 * MiB) == before[:64 * MiB], "%s: bytes before the WRITE changed" % mode)
        check(file_bytes(path, 100 * MiB) == before[100 * MiB:], "%s: bytes past the limit changed" % mode)

# READs at 48 MiB: the first piece, [48, 80) MiB, reads; the second fails.
os.truncate(path, 80 * MiB)
first = file_bytes(path, 48 * MiB, P)
for mode in ("structured", "extended"):
    with plain(mode) as c:
        err, chunks = c.cmd(CMD_READ, 48 * MiB, L)
        expect(err, EIO, "%s: READ failing in its second piece" % mode)
        data = [ch for ch in chunks if ch.type == REPLY_TYPE_OFFSET_DATA]
        check(len(data) == 1 and data[0].data_offset == 48 * MiB and data[0].data == first,
              "%s: READ: not the first piece, then the error: %r" % (mode, chunks))
        expect(chunks[-1].type, REPLY_TYPE_ERROR, "%s: READ: the final chunk" % mode)

        err, chunks = c.cmd(CMD_READ, 48 * MiB, L, CMD_FLAG_DF)
        expect(err, EIO, "%s: DF READ failing in its second piece" % mode)
        expect([ch.type for ch in chunks], [REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_ERROR],
               "%s: DF READ: one data chunk, then the error" % mode)
        check(not chunks[0].done and chunks[0].data == first + bytes(L - P),
              "%s: DF READ: the chunk is not the first piece padded with zeroes" % mode)
        expect(c.read(0, 4096), (0, before[:4096]), "%s: in sync after the failed READs" % mode)

with plain("simple") as c:
    c.request(CMD_READ, 48 * MiB, L)
    magic, err, _ = struct.unpack(">IIQ", c.recv(16))
    expect((magic, err), (SIMPLE_REPLY_MAGIC, 0), "simple READ failing in its second piece: the header")
    got = c.wait_closed(30)
    check(got == first, "simple READ failing in its second piece: %d bytes before the close, "
          "not the first piece" % len(got))

os.truncate(path, 160 * MiB)   # its size again, for the last checks
EOF

grep -q "failed after its reply began" "$BDF_LOG" || fail "the log does not say why the simple READ was cut"
nbd_done
