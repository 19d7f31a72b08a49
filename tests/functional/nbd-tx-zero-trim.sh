#!/bin/bash
# Transmission: WRITE_ZEROES (plain, NO_HOLE, FUA, FAST_ZERO), TRIM and CACHE. The
# zeroed ranges read back as zeroes (unaligned ones too); FAST_ZERO is offered and
# either succeeds (and zeroes) or fails with ENOTSUP leaving the data alone; data
# next to each range is untouched; TRIM and CACHE succeed.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "WRITE_ZEROES / TRIM / CACHE"
from nbdraw import *

path = os.environ["DISK"]
disk = bytearray(file_bytes(path))
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        check(c.eflags & FLAG_SEND_FAST_ZERO, "FAST_ZERO offered")
        base = {"simple": 0, "structured": 4 * MiB, "extended": 8 * MiB}[mode]
        for off, n, flags in ((4096, 8192, CMD_FLAG_NO_HOLE), (65536, 65536, CMD_FLAG_FUA),
                              (200000 + 3, 70001, 0), (MiB, MiB, 0)):
            expect(c.cmd(CMD_WRITE_ZEROES, base + off, n, flags)[0], 0, "%s: WRITE_ZEROES %d+%d" % (mode, off, n))
            disk[base + off:base + off + n] = bytes(n)
        err = c.cmd(CMD_WRITE_ZEROES, base + 3 * MiB, MiB, CMD_FLAG_FAST_ZERO)[0]
        check(err in (0, ENOTSUP), "%s: FAST_ZERO error %d" % (mode, err))
        if err == 0:
            disk[base + 3 * MiB:base + 4 * MiB] = bytes(MiB)
        err, data = c.read(base, 4 * MiB)
        expect(err, 0, "%s: READ" % mode)
        check(data == bytes(disk[base:base + 4 * MiB]), "%s: zeroed ranges and their neighbours" % mode)
        expect(c.cmd(CMD_TRIM, base + 2 * MiB, MiB)[0], 0, "%s: TRIM" % mode)
        expect(c.cmd(CMD_TRIM, base + 2 * MiB + 1, 1000, CMD_FLAG_FUA)[0], 0, "%s: unaligned TRIM with FUA" % mode)
        expect(c.cmd(CMD_CACHE, 0, 4 * MiB)[0], 0, "%s: CACHE" % mode)
        # after TRIM the trimmed range is undefined: overwrite it before comparing
        new = os.urandom(MiB)
        expect(c.write(base + 2 * MiB, new), 0, "%s: WRITE over the trimmed range" % mode)
        disk[base + 2 * MiB:base + 3 * MiB] = new
        expect(c.cmd(CMD_FLUSH)[0], 0, "FLUSH")
check(file_bytes(path) == bytes(disk), "the file")
EOF

nbd_done
