#!/bin/bash
# nbdsh (libnbd's Python binding): a scripted session with every command, and
# several handles writing disjoint regions in parallel.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdsh

truncate -s 32M "$T/disk.img"
dd if=/dev/urandom of="$T/disk.img" bs=1M seek=8 count=8 conv=notrunc status=none
bdf_start --device "disk=$T/disk.img"

/usr/bin/nbdsh --base-allocation -u "$(uri disk)" -c '
import nbd
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

# errors come back as exceptions, the connection goes on
try:
    h.pread(4096, 32 << 20)
    assert False, "read past the end succeeded"
except nbd.Error as e:
    pass
assert h.pread(512, 0) is not None
' || fail "nbdsh session"

# four handles in parallel, each writing and checking its own 4 MiB region
/usr/bin/nbdsh -c '
import nbd, os, threading
uri = "'"$(uri disk)"'"
errors = []
def worker(i):
    try:
        hh = nbd.NBD()
        hh.connect_uri(uri)
        data = os.urandom(4 << 20)
        base = (16 << 20) + i * (4 << 20)
        for off in range(0, 4 << 20, 256 << 10):
            hh.pwrite(data[off:off + (256 << 10)], base + off)
        hh.flush()
        assert hh.pread(4 << 20, base) == data
        hh.shutdown()
    except Exception as e:
        errors.append(e)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
assert not errors, errors
' || fail "parallel handles"
bdf_alive
