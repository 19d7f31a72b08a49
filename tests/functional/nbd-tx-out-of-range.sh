#!/bin/bash
# Transmission: requests beyond the end of the export, checked without integer
# overflow. READ, CACHE and BLOCK_STATUS past the end, at the end, and with
# offset + length wrapping past 2^64: EINVAL. WRITE and WRITE_ZEROES past the end:
# ENOSPC (spec: SHOULD); the WRITE's payload is consumed, so the next request on
# the connection works; the file is not touched. (TRIM: nbd-tx-trim-out-of-range.sh.)
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "out of range requests"
from nbdraw import *

SIZE = 16 * MiB
disk = file_bytes(os.environ["DISK"])
ranges = [(SIZE - 512, 1024), (SIZE, 1), (SIZE + 4096, 4096), (2**63, 512), (2**64 - 512, 1024),
          (2**64 - 1, 2), (1, 2**32 - 1)]
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended",
                  meta=["base:allocation"] if mode != "simple" else None)
        for off, n in ranges:
            expect(c.cmd(CMD_READ, off, n)[0], EINVAL, "%s: READ %d+%d" % (mode, off, n))
            expect(c.cmd(CMD_CACHE, off, n)[0], EINVAL, "%s: CACHE %d+%d" % (mode, off, n))
            if mode != "simple":
                expect(c.cmd(CMD_BLOCK_STATUS, off, n)[0], EINVAL, "%s: BLOCK_STATUS %d+%d" % (mode, off, n))
            expect(c.cmd(CMD_WRITE_ZEROES, off, n)[0], ENOSPC, "%s: WRITE_ZEROES %d+%d" % (mode, off, n))
            if n <= 65536:
                expect(c.write(off, b"W" * n), ENOSPC, "%s: WRITE %d+%d" % (mode, off, n))
            # the stream is in sync after each refused WRITE
            expect(c.read(SIZE - 4096, 4096), (0, disk[-4096:]), "%s: READ after %d+%d" % (mode, off, n))
        if mode == "extended":
            # 64-bit effect lengths
            for off, n in ((0, 2**40), (4096, 2**64 - 4096), (2**64 - 1, 2**64 - 1)):
                for cmd in (CMD_READ, CMD_CACHE, CMD_BLOCK_STATUS):
                    expect(c.cmd(cmd, off, n)[0], EINVAL, "extended: command %d %d+%d" % (cmd, off, n))
                expect(c.cmd(CMD_WRITE_ZEROES, off, n)[0], ENOSPC, "extended: WRITE_ZEROES %d+%d" % (off, n))
        # the last byte is in range
        expect(c.read(SIZE - 1, 1), (0, disk[-1:]), "%s: READ of the last byte" % mode)
        expect(file_bytes(os.environ["DISK"]), disk, "%s: the file is unchanged" % mode)

EOF

nbd_done
