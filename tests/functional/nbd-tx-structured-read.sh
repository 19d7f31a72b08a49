#!/bin/bash
# Transmission with structured replies, on a sparse file (data at [1 MiB, 2 MiB)
# and [8 MiB, 8 MiB + 64 KiB)): a READ of a hole gets an OFFSET_HOLE chunk, a READ
# across hole and data gets HOLE then DATA chunks that cover it exactly with DONE
# on the last only; with NBD_CMD_FLAG_DF it gets exactly one OFFSET_DATA chunk
# (zeroes included). Successful WRITE, FLUSH, TRIM, WRITE_ZEROES and CACHE get
# simple replies; errors are NBD_REPLY_TYPE_ERROR chunks with a message.
# BLOCK_STATUS gives BLOCK_STATUS(5) chunks; REQ_ONE one descriptor.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
truncate -s 16M "$DISK"
head -c 1M /dev/urandom | dd of="$DISK" bs=1M seek=1 conv=notrunc status=none
head -c 64K /dev/urandom | dd of="$DISK" bs=64K seek=128 conv=notrunc status=none
"$PY" -c "
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
sys.exit(0 if os.lseek(fd, 0, os.SEEK_HOLE) == 0 and os.lseek(fd, 0, os.SEEK_DATA) == 1 << 20 else 1)
" "$DISK" || skip "the file system of $T does not report holes"
nbd_start

$PY - <<'EOF' || fail "structured reads"
from nbdraw import *

path = os.environ["DISK"]
disk = file_bytes(path)
with Client() as c:
    ctx = c.connect(meta=["base:allocation"])
    check(c.eflags & FLAG_SEND_DF, "SEND_DF")

    err, chunks = c.cmd(CMD_READ, 0, 65536)
    expect(err, 0, "READ of a hole")
    expect([(ch.type, ch.data_offset, ch.hole_length, ch.done) for ch in chunks],
           [(REPLY_TYPE_OFFSET_HOLE, 0, 65536, True)], "READ of a hole: one HOLE chunk")

    err, chunks = c.cmd(CMD_READ, 0, 2 * MiB)
    expect(err, 0, "READ across hole and data")
    expect([(ch.type, ch.data_offset, ch.done) for ch in chunks],
           [(REPLY_TYPE_OFFSET_HOLE, 0, False), (REPLY_TYPE_OFFSET_DATA, MiB, True)], "HOLE then DATA")
    expect(chunks[0].hole_length, MiB, "hole length")
    check(Client.assemble(0, 2 * MiB, chunks) == disk[:2 * MiB], "data")

    err, chunks = c.cmd(CMD_READ, 8 * MiB - 4096, 65536 + 8192)
    expect([ch.type for ch in chunks], [REPLY_TYPE_OFFSET_HOLE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE],
           "hole, data, hole")
    check(Client.assemble(8 * MiB - 4096, 65536 + 8192, chunks) == disk[8 * MiB - 4096:8 * MiB + 65536 + 4096],
          "data")

    for off, n in ((0, 2 * MiB), (0, 65536), (8 * MiB - 4096, 65536 + 8192), (MiB, 4096)):
        err, chunks = c.cmd(CMD_READ, off, n, flags=CMD_FLAG_DF)
        expect(err, 0, "DF READ %d+%d" % (off, n))
        content = [ch for ch in chunks if ch.type in (REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE)]
        expect([(ch.type, ch.data_offset) for ch in content], [(REPLY_TYPE_OFFSET_DATA, off)],
               "DF READ %d+%d: one DATA chunk" % (off, n))
        check(content[0].data == disk[off:off + n], "DF READ %d+%d data" % (off, n))

    # simple replies for success without data
    for cmd, off, n, payload in ((CMD_WRITE, 4 * MiB, 4096, os.urandom(4096)), (CMD_FLUSH, 0, 0, b""),
                                 (CMD_TRIM, 10 * MiB, MiB, b""), (CMD_WRITE_ZEROES, 11 * MiB, 4096, b""),
                                 (CMD_CACHE, 0, MiB, b"")):
        err, chunks = c.cmd(cmd, off, n, payload=payload)
        expect([(ch.magic, ch.error) for ch in chunks], [(SIMPLE_REPLY_MAGIC, 0)], "command %d: simple reply" % cmd)

    # errors are chunks with a message
    for cmd, off, n, flags in ((CMD_READ, 16 * MiB, 512, 0), (CMD_READ, 0, 512, 1 << 10),
                               (CMD_WRITE_ZEROES, 16 * MiB, 512, 0), (CMD_BLOCK_STATUS, 0, 0, 0)):
        err, chunks = c.cmd(cmd, off, n, flags)
        expect([(ch.magic, ch.type, ch.done) for ch in chunks], [(STRUCTURED_REPLY_MAGIC, REPLY_TYPE_ERROR, True)],
               "command %d: error chunk" % cmd)
        check(chunks[0].msg, "the error chunk has a message")

    # block status: hole, data, hole
    err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 16 * MiB)
    expect([(ch.type, ch.context_id) for ch in chunks], [(REPLY_TYPE_BLOCK_STATUS, ctx["base:allocation"])],
           "one BLOCK_STATUS chunk")
    expect(chunks[0].extents[:3], [(MiB, STATE_HOLE | STATE_ZERO), (MiB, 0), (2 * MiB, STATE_HOLE | STATE_ZERO)],
           "extents")
    err, chunks = c.cmd(CMD_BLOCK_STATUS, MiB + 4096, 3 * MiB, flags=CMD_FLAG_REQ_ONE)
    expect(chunks[0].extents, [(MiB - 4096, 0)], "REQ_ONE")
    err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 4096, flags=CMD_FLAG_REQ_ONE)
    expect(chunks[0].extents, [(4096, STATE_HOLE | STATE_ZERO)], "REQ_ONE within the request")
EOF

nbd_done
