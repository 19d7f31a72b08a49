#!/bin/bash
# Transmission on the read-only export: WRITE, TRIM and WRITE_ZEROES (with any
# flags, in range or not) are EPERM; WRITE's payload is consumed and the
# connection goes on; READ, CACHE, FLUSH and BLOCK_STATUS work; the file is
# unchanged.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "read-only export"
from nbdraw import *

ro = file_bytes(os.environ["RO"])
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect("ro", structured=mode == "structured", extended=mode == "extended",
                  meta=["base:allocation"] if mode != "simple" else None)
        check(c.eflags & FLAG_READ_ONLY, "READ_ONLY")
        for off, n in ((0, 4096), (MiB, 65536), (16 * MiB - 512, 512), (16 * MiB - 512, 1024)):
            expect(c.write(off, os.urandom(n)), EPERM, "%s: WRITE %d+%d" % (mode, off, n))
            expect(c.write(off, os.urandom(n), flags=CMD_FLAG_FUA), EPERM, "%s: WRITE FUA" % mode)
            expect(c.cmd(CMD_TRIM, off, n)[0], EPERM, "%s: TRIM %d+%d" % (mode, off, n))
            for flags in (0, CMD_FLAG_NO_HOLE, CMD_FLAG_FUA):
                expect(c.cmd(CMD_WRITE_ZEROES, off, n, flags)[0], EPERM,
                       "%s: WRITE_ZEROES %d+%d flags %#x" % (mode, off, n, flags))
            expect(c.read(off, 512), (0, ro[off:off + 512]), "%s: READ after refused writes" % mode)
        expect(c.cmd(CMD_FLUSH)[0], 0, "%s: FLUSH" % mode)
        expect(c.cmd(CMD_CACHE, 0, MiB)[0], 0, "%s: CACHE" % mode)
        if mode != "simple":
            expect(c.cmd(CMD_BLOCK_STATUS, 0, MiB)[0], 0, "%s: BLOCK_STATUS" % mode)
        expect(c.read(0, MiB), (0, ro[:MiB]), "%s: READ" % mode)
expect(file_bytes(os.environ["RO"]), ro, "the read-only file is unchanged")
EOF

nbd_done
