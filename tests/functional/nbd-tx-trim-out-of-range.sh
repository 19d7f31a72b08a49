#!/bin/bash
# Transmission: TRIM beyond the end of the export is EINVAL (spec, Error values:
# the server "SHOULD return NBD_EINVAL if it receives a read or trim request
# including one or more sectors beyond the size of the device"; ENOSPC is for
# write and write-zeroes requests), without integer overflow, and the file is
# not touched.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "TRIM out of range"
from nbdraw import *

SIZE = 16 * MiB
disk = file_bytes(os.environ["DISK"])
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        for off, n in ((SIZE - 512, 1024), (SIZE, 1), (2**64 - 512, 1024), (1, 2**32 - 1)):
            err, chunks = c.cmd(CMD_TRIM, off, n)
            expect(err, EINVAL, "%s: TRIM %d+%d (reply %r)" % (mode, off, n, chunks))
        expect(c.read(0, 4096), (0, disk[:4096]), "%s: READ after" % mode)
expect(file_bytes(os.environ["DISK"]), disk, "the file is unchanged")
EOF

nbd_done
