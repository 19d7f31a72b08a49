#!/bin/bash
# Transmission: command flags that are unknown or not valid for the command are
# EINVAL, the connection goes on, and nothing is written: bit 10 on READ, NO_HOLE
# and REQ_ONE and FAST_ZERO on READ, REQ_ONE on TRIM, DF on READ without
# structured replies, PAYLOAD_LEN on a compact WRITE (its payload is still
# consumed), FAST_ZERO on WRITE, bit 15 on WRITE_ZEROES, DF on BLOCK_STATUS.
# FUA is valid on every command.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "bad command flags"
from nbdraw import *

disk = file_bytes(os.environ["DISK"])
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended", meta=None)
        x = CMD_FLAG_PAYLOAD_LEN if mode == "extended" else 0
        bad = [(CMD_READ, 1 << 10, b""), (CMD_READ, CMD_FLAG_NO_HOLE, b""), (CMD_READ, CMD_FLAG_REQ_ONE, b""),
               (CMD_READ, CMD_FLAG_FAST_ZERO, b""), (CMD_TRIM, CMD_FLAG_REQ_ONE, b""),
               (CMD_WRITE, CMD_FLAG_FAST_ZERO | x, b"w" * 512), (CMD_WRITE, (1 << 10) | x, b"w" * 512),
               (CMD_WRITE_ZEROES, 1 << 15, b""), (CMD_WRITE_ZEROES, CMD_FLAG_DF, b""),
               (CMD_CACHE, CMD_FLAG_NO_HOLE, b"")]
        if mode == "simple":
            bad += [(CMD_READ, CMD_FLAG_DF, b""), (CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, b"w" * 512)]
        for cmd, flags, payload in bad:
            err, chunks = c.cmd(cmd, 0, 512, flags=flags, payload=payload)
            expect(err, EINVAL, "%s: command %d with flags %#x" % (mode, cmd, flags))
            if mode != "simple":
                expect(chunks[-1].type, REPLY_TYPE_ERROR, "%s: an error chunk" % mode)
        expect(file_bytes(os.environ["DISK"], 0, 512), disk[:512], "%s: nothing was written" % mode)
        for cmd in (CMD_READ, CMD_CACHE, CMD_FLUSH):
            length = 0 if cmd == CMD_FLUSH else 512
            expect(c.cmd(cmd, 0, length, flags=CMD_FLAG_FUA)[0], 0, "%s: FUA on command %d" % (mode, cmd))
        expect(c.write(0, disk[:512], flags=CMD_FLAG_FUA), 0, "%s: WRITE with FUA" % mode)
        expect(c.read(0, 4096), (0, disk[:4096]), "%s: READ after bad flags" % mode)
EOF

nbd_done
