#!/bin/bash
# nbdsh (libnbd's Python binding): a scripted session with every command, and
# several handles writing disjoint regions in parallel.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdsh

truncate -s 32M "$T/disk.img"
dd if=/dev/urandom of="$T/disk.img" bs=1M seek=8 count=8 conv=notrunc status=none
cp --sparse=always "$T/disk.img" "$T/ro.img"
bdf_start --device "disk=$T/disk.img" --device "ro=$T/ro.img,ro"

/usr/bin/nbdsh --base-allocation -u "$(uri disk)" -c '
import nbd, errno
assert h.get_size() == 32 << 20
assert h.get_structured_replies_negotiated()
assert h.can_multi_conn() and h.can_flush() and h.can_fua() and h.can_trim()
assert h.can_zero() and h.can_fast_zero() and h.can_cache() and h.can_df()
assert h.get_block_size(nbd.SIZE_MINIMUM) == 1
assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)

buf = bytes(range(256)) * 4096          # 1 MiB
h.pwrite(buf, 1000, nbd.CMD_FLAG_FUA)
assert h.pread(len(buf), 1000) == buf
h.flush()
h.zero(65536, 4 << 20)
assert h.pread(65536, 4 << 20) == bytes(65536)
h.zero(65536, 5 << 20, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(65536, 5 << 20) == bytes(65536)
h.trim(1 << 20, 20 << 20)
h.cache(1 << 20, 8 << 20)

seen = []
def cb(metacontext, offset, entries, err):
    assert metacontext == nbd.CONTEXT_BASE_ALLOCATION
    seen.append((offset, entries))
h.block_status(32 << 20, 0, cb)
(offset, entries) = seen[0]
assert offset == 0
assert sum(entries[0::2]) == 32 << 20, entries
flags = dict()
pos = 0
for length, f in zip(entries[0::2], entries[1::2]):
    flags[pos] = f
    pos += length
# 8..16 MiB was written by dd: data; 20..21 MiB was trimmed: hole
data_at_9M = [f for start, f in flags.items() if start <= 9 << 20][-1]
assert data_at_9M == 0, flags
hole_at_20M = [f for start, f in flags.items() if start <= 20 << 20][-1]
assert hole_at_20M & nbd.STATE_HOLE, flags

seen.clear()
h.block_status(4096, 0, cb, nbd.CMD_FLAG_REQ_ONE)
assert len(seen[0][1]) == 2 and seen[0][1][0] <= 4096

# errors come back as exceptions, the connection goes on; with strict bounds
# off in libnbd the out-of-range requests reach the server, which must refuse them
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_BOUNDS)
for op in (lambda: h.pread(4096, 32 << 20), lambda: h.pread(8192, (32 << 20) - 4096),
           lambda: h.pwrite(b"x" * 512, 32 << 20), lambda: h.trim(4096, (32 << 20) - 512),
           lambda: h.zero(1 << 20, 32 << 20)):
    try:
        op()
        assert False, "an out-of-range request succeeded"
    except nbd.Error as e:
        assert e.errnum in (errno.EINVAL, errno.ENOSPC), e
assert h.pread(512, 1000) == buf[:512]
assert h.pread(512, (32 << 20) - 512) is not None
' || fail "nbdsh session"

# a read-only export: libnbd would refuse writes itself, so strict mode is off
# to let them reach the server, which must answer EPERM and go on
/usr/bin/nbdsh -u "$(uri ro)" -c '
import nbd, errno
assert h.is_read_only() and not h.can_trim() and not h.can_zero()
h.set_strict_mode(0)
for op in (lambda: h.pwrite(b"x" * 4096, 0), lambda: h.zero(4096, 0), lambda: h.trim(4096, 0),
           lambda: h.pwrite(b"x" * 512, 1 << 20, nbd.CMD_FLAG_FUA)):
    try:
        op()
        assert False, "a write to a read-only export succeeded"
    except nbd.Error as e:
        assert e.errnum == errno.EPERM, e
assert len(h.pread(4096, 0)) == 4096
h.flush()
' || fail "read-only export"

# four handles in parallel (threads, one connection each), each writing its own
# 4 MiB region in 256 KiB pieces at unaligned offsets, then every region checked
# from every handle after a flush (multi-conn: a flush on one covers all)
mkimage "$T/pattern" 16
/usr/bin/nbdsh -c '
import nbd, threading
uri = "'"$(uri disk)"'"
pattern = open("'"$T/pattern"'", "rb").read()
R = 4 << 20
BASE = 16 << 20
errors = []
handles = []
for i in range(4):
    hh = nbd.NBD()
    hh.connect_uri(uri)
    handles.append(hh)
barrier = threading.Barrier(4)
def worker(i):
    try:
        hh = handles[i]
        barrier.wait()
        base = BASE + i * R
        off = 0
        step = (256 << 10) - 511          # unaligned pieces
        while off < R:
            n = min(step, R - off)
            hh.pwrite(pattern[i * R + off:i * R + off + n], base + off)
            off += n
        hh.flush()
    except Exception as e:
        errors.append(e)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
assert not errors, errors
handles[0].flush()
for j, hh in enumerate(handles):
    for i in range(4):
        got = hh.pread(R, BASE + i * R)
        assert got == pattern[i * R:(i + 1) * R], "handle %d sees region %d wrong" % (j, i)
for hh in handles:
    hh.shutdown()
' || fail "parallel handles"

# many requests in flight on one handle (aio): 256 writes of 64 KiB in random
# order, then 256 reads, replies may come back in any order
/usr/bin/nbdsh -u "$(uri disk)" -c '
import nbd, random
pattern = open("'"$T/pattern"'", "rb").read()
B = 64 << 10
order = list(range(256))
random.shuffle(order)
cookies = [h.aio_pwrite(pattern[k * B:(k + 1) * B][::-1], k * B) for k in order]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)      # raises if the write failed
h.flush()
bufs = {}
for k in order:
    b = nbd.Buffer(B)
    bufs[k] = (b, h.aio_pread(b, k * B))
while h.aio_in_flight() > 0:
    h.poll(-1)
for k, (b, cookie) in bufs.items():
    assert h.aio_command_completed(cookie)
    assert b.to_bytearray() == pattern[k * B:(k + 1) * B][::-1], "aio read %d" % k
' || fail "aio requests in flight"

bdf_stop
# the backing file holds the parallel writes (16..32 MiB) and the aio writes (0..16 MiB)
$PY - "$T/disk.img" "$T/pattern" <<'PY' || fail "backing file after the parallel writes"
import sys
disk = open(sys.argv[1], "rb").read()
pattern = open(sys.argv[2], "rb").read()
B = 64 << 10
assert disk[16 << 20:32 << 20] == pattern, "parallel regions"
for k in range(256):
    assert disk[k * B:(k + 1) * B] == pattern[k * B:(k + 1) * B][::-1], "aio block %d" % k
PY
