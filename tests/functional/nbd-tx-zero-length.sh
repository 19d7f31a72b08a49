#!/bin/bash
# Transmission: zero-length READ, WRITE, TRIM, WRITE_ZEROES, CACHE and
# BLOCK_STATUS are EINVAL and do not disconnect (spec: "the server SHOULD NOT
# disconnect"), anywhere in the export including at its end; READ errors under
# structured replies are error chunks, never simple replies.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "zero-length requests"
from nbdraw import *

disk = file_bytes(os.environ["DISK"])
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended",
                  meta=["base:allocation"] if mode != "simple" else None)
        cmds = [CMD_READ, CMD_TRIM, CMD_WRITE_ZEROES, CMD_CACHE]
        if mode != "simple":
            cmds.append(CMD_BLOCK_STATUS)
        for off in (0, 4096, 16 * MiB):
            for cmd in cmds:
                err, chunks = c.cmd(cmd, off, 0)
                expect(err, EINVAL, "%s: zero-length command %d at %d" % (mode, cmd, off))
                if mode != "simple":
                    expect(chunks[0].type, REPLY_TYPE_ERROR, "%s: error chunk" % mode)
            expect(c.write(off, b""), EINVAL, "%s: zero-length WRITE at %d" % (mode, off))
        expect(c.read(0, 4096), (0, disk[:4096]), "%s: no disconnect" % mode)
EOF

nbd_done
