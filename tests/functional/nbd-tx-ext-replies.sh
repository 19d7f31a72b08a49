#!/bin/bash
# Transmission with extended headers: every reply is an extended chunk (magic
# 0x6e8a278c, never a simple reply), its offset field is the request's offset
# (for data, hole, status, NONE and error chunks alike), success without data is
# a NONE chunk with DONE, READ of a sparse region gives OFFSET_HOLE and
# OFFSET_DATA chunks that cover the request exactly, and BLOCK_STATUS answers
# with one BLOCK_STATUS_EXT chunk per context (descriptor count matching, 64-bit
# status with the high half zero, REQ_ONE giving one descriptor within the
# request). Holes are checked where the file system reports them.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
# sparse: data at [1 MiB, 2 MiB) and [8 MiB, 8 MiB + 64 KiB), holes elsewhere
truncate -s 16M "$DISK"
head -c 1M /dev/urandom | dd of="$DISK" bs=1M seek=1 conv=notrunc status=none
head -c 64K /dev/urandom | dd of="$DISK" bs=64K seek=128 conv=notrunc status=none
nbd_start

$PY - <<'EOF' || fail "extended replies"
from nbdraw import *

path = os.environ["DISK"]
disk = file_bytes(path)
fd = os.open(path, os.O_RDONLY)
sparse = os.lseek(fd, 0, os.SEEK_HOLE) == 0 and os.lseek(fd, 0, os.SEEK_DATA) == MiB
os.close(fd)

with Client() as c:
    ctx = c.connect(extended=True, meta=["base:allocation"])
    def run(cmd, off, n, flags=0, payload=b""):
        err, chunks = c.cmd(cmd, off, n, flags, payload)
        for ch in chunks:
            expect(ch.magic, EXT_REPLY_MAGIC, "command %d: reply magic" % cmd)
            expect(ch.offset, off, "command %d at %d: the reply's offset field" % (cmd, off))
        return err, chunks

    # READ across hole and data, unaligned at both ends
    for off, n in ((MiB - 4096, 8192), (MiB - 100, 300), (0, 2 * MiB), (7 * MiB + 12345, 2 * MiB)):
        err, chunks = run(CMD_READ, off, n)
        expect(err, 0, "READ %d+%d" % (off, n))
        check(chunks[-1].done and not any(ch.done for ch in chunks[:-1]), "DONE on the last chunk only")
        expect(Client.assemble(off, n, chunks), disk[off:off + n], "READ %d+%d data" % (off, n))
        types = {ch.type for ch in chunks}
        check(types <= {REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, REPLY_TYPE_NONE}, "types %r" % types)
        if sparse and (off, n) == (MiB - 4096, 8192):
            expect([(ch.type, ch.data_offset) for ch in chunks[:2]],
                   [(REPLY_TYPE_OFFSET_HOLE, MiB - 4096), (REPLY_TYPE_OFFSET_DATA, MiB)], "hole then data")

    # NONE for success without data
    new = os.urandom(4096)
    for cmd, off, n, payload, flags in ((CMD_WRITE, 5 * MiB, 4096, new, CMD_FLAG_PAYLOAD_LEN),
                                        (CMD_FLUSH, 0, 0, b"", 0), (CMD_CACHE, 4096, MiB, b"", 0),
                                        (CMD_WRITE_ZEROES, 6 * MiB, 8192, b"", 0), (CMD_TRIM, 9 * MiB, MiB, b"", 0)):
        err, chunks = run(cmd, off, n, flags, payload)
        expect([(ch.type, ch.done, ch.error) for ch in chunks], [(REPLY_TYPE_NONE, True, 0)],
               "command %d: one NONE chunk" % cmd)
    expect(c.read(5 * MiB, 4096), (0, new), "READ back")

    # errors: ERROR chunks, offset echoed
    for cmd, off, n in ((CMD_READ, 16 * MiB, 512), (99, 12345, 1), (CMD_READ, 0, 0)):
        err, chunks = run(cmd, off, n)
        expect([(ch.type, ch.done) for ch in chunks], [(REPLY_TYPE_ERROR, True)], "command %d: error chunk" % cmd)
        expect(err, EINVAL, "command %d error" % cmd)

    # BLOCK_STATUS_EXT
    for off, n, flags in ((0, 16 * MiB, 0), (MiB - 512, MiB, 0), (4096, 4096, CMD_FLAG_REQ_ONE),
                          (0, 16 * MiB, CMD_FLAG_REQ_ONE)):
        err, chunks = run(CMD_BLOCK_STATUS, off, n, flags)
        expect(err, 0, "BLOCK_STATUS %d+%d" % (off, n))
        expect([(ch.type, ch.context_id, ch.done) for ch in chunks],
               [(REPLY_TYPE_BLOCK_STATUS_EXT, ctx["base:allocation"], True)], "one BLOCK_STATUS_EXT chunk")
        ext = chunks[0].extents
        check(all(length > 0 and status >> 32 == 0 for length, status in ext), "descriptors %r" % ext)
        if flags & CMD_FLAG_REQ_ONE:
            expect(len(ext), 1, "REQ_ONE: one descriptor")
            check(ext[0][0] <= n, "REQ_ONE: descriptor longer than the request")
        else:
            check(sum(l for l, _ in ext[:-1]) < n, "descriptors beyond the first N-1 past the request")
        if sparse and (off, n, flags) == (0, 16 * MiB, 0):
            expect(ext[:2], [(MiB, STATE_HOLE | STATE_ZERO), (MiB, 0)], "hole then data")
EOF

nbd_done
