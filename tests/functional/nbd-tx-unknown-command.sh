#!/bin/bash
# Transmission: unknown commands (8 = RESIZE, not offered; 99; 0xffff) are
# answered EINVAL and the connection goes on: with simple replies (a simple error
# reply), with structured replies (an NBD_REPLY_TYPE_ERROR chunk with DONE and a
# message) and with extended headers (the same as an extended chunk; with
# PAYLOAD_LEN the payload is consumed first).
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "unknown commands"
from nbdraw import *

disk = file_bytes(os.environ["DISK"])
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        for cmd in (8, 99, 0xFFFF):
            err, chunks = c.cmd(cmd, 0, 512)
            expect(err, EINVAL, "%s: command %d" % (mode, cmd))
            expect(len(chunks), 1, "%s: one reply chunk" % mode)
            ch = chunks[0]
            if mode == "simple":
                expect(ch.magic, SIMPLE_REPLY_MAGIC, "simple error reply")
            else:
                expect((ch.type, ch.done), (REPLY_TYPE_ERROR, True), "%s: error chunk with DONE" % mode)
                check(ch.msg, "%s: the error chunk has a message" % mode)
                check(b"\0" not in ch.msg, "%s: NUL in the message" % mode)
            if mode == "extended":
                expect(ch.offset, 0, "extended error chunk offset")
        if mode == "extended":
            err, _ = c.cmd(99, 4096, 1000, flags=CMD_FLAG_PAYLOAD_LEN, payload=os.urandom(1000))
            expect(err, EINVAL, "command 99 with a payload")
        expect(c.read(4096, 8192), (0, disk[4096:12288]), "%s: READ after unknown commands" % mode)
        c.disconnect()
        c.expect_closed("DISC")
EOF

nbd_done
