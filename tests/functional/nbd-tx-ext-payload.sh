#!/bin/bash
# Transmission with extended headers: NBD_CMD_FLAG_PAYLOAD_LEN. WRITE without it
# is EINVAL (length is an effect length, no payload follows, nothing is written).
# READ, FLUSH, TRIM, CACHE, WRITE_ZEROES and BLOCK_STATUS with it (the server
# does not offer BLOCK_STATUS_PAYLOAD) have their payload consumed, then EINVAL,
# and the connection goes on. A WRITE payload over the 32 MiB maximum: spec says
# the server SHOULD hard-disconnect; consuming it and answering EINVAL keeps the
# stream usable too; either is accepted here. A payload length of 2^40 cannot be
# skipped: the server must close.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "extended headers: payload lengths"
from nbdraw import *

path = os.environ["DISK"]
disk = file_bytes(path)
with Client(timeout=60) as c:
    c.connect(extended=True, meta=["base:allocation"])
    check(not c.eflags & FLAG_BLOCK_STATUS_PAYLOAD, "BLOCK_STATUS_PAYLOAD offered")
    err, chunks = c.cmd(CMD_WRITE, 0, 512)
    expect(err, EINVAL, "WRITE without PAYLOAD_LEN")
    expect(chunks[0].magic, EXT_REPLY_MAGIC, "extended error reply")
    expect(c.read(0, 4096), (0, disk[:4096]), "READ after a WRITE without PAYLOAD_LEN")

    for cmd in (CMD_READ, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS):
        for n in (1, 100, 70000):
            payload = b"p" * n
            err, chunks = c.cmd(cmd, 0, n, flags=CMD_FLAG_PAYLOAD_LEN, payload=payload)
            expect(err, EINVAL, "command %d with a %d-byte payload" % (cmd, n))
            expect(len(chunks), 1, "command %d with a payload: only the error" % cmd)
            expect(c.read(4096, 4096), (0, disk[4096:8192]), "READ after command %d with a payload" % cmd)
    # BLOCK_STATUS in the payload form the server does not offer
    payload = struct.pack(">QI", 4096, 1)
    expect(c.cmd(CMD_BLOCK_STATUS, 0, len(payload), flags=CMD_FLAG_PAYLOAD_LEN, payload=payload)[0], EINVAL,
           "BLOCK_STATUS payload form")
    expect(c.cmd(CMD_BLOCK_STATUS, 0, 4096)[0], 0, "BLOCK_STATUS")
    expect(file_bytes(path), disk, "nothing was written")

    # over the maximum payload
    cookie = c.request(CMD_WRITE, 0, 32 * MiB + 1, CMD_FLAG_PAYLOAD_LEN, b"o" * (32 * MiB + 1), may_fail=True)
    try:
        err = Client.error_of(c.reply(cookie))
        expect(err, EINVAL, "a 32 MiB + 1 payload")
        expect(c.read(0, 4096), (0, disk[:4096]), "READ after an oversized payload")
        print("# an oversized extended payload was consumed and refused (spec: SHOULD disconnect)")
    except Closed:
        print("# an oversized extended payload closed the connection")
expect(file_bytes(path), disk, "nothing was written")

with Client() as c:
    c.connect(extended=True)
    c.request(CMD_WRITE, 0, 2**40, CMD_FLAG_PAYLOAD_LEN, b"o" * 4096, may_fail=True)
    c.expect_closed("a 2^40-byte payload")
EOF

nbd_done
