#!/bin/bash
# Transmission: NBD_CMD_DISC. Requests sent before it are all answered, DISC
# itself gets no reply, the server closes, and garbage sent after DISC is never
# read as requests (no reply to it, no effect on the file); data written before
# DISC is in the file. Also: DISC with nonzero fields, and a client that hangs up
# without DISC, with and without requests in flight.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "NBD_CMD_DISC"
from nbdraw import *

path = os.environ["DISK"]
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        x = CMD_FLAG_PAYLOAD_LEN if mode == "extended" else 0
        data = os.urandom(65536)
        cookies = [c.request(CMD_WRITE, 8192, len(data), x, data),
                   c.request(CMD_READ, MiB, 4096),
                   c.request(CMD_WRITE, 2 * MiB, 512, x, b"d" * 512, cookie=0xFFFFFFFFFFFFFFFF),
                   c.request(CMD_FLUSH)]
        c.disconnect()
        # garbage behind DISC: a well-formed WRITE of other data, then junk
        c.request(CMD_WRITE, 3 * MiB, 512, x, b"G" * 512, may_fail=True)
        c.send(os.urandom(4096), may_fail=True)
        got = c.replies(cookies)
        for cookie in cookies:
            expect(Client.error_of(got[cookie]), 0, "%s: request %#x before DISC" % (mode, cookie))
        c.expect_closed("%s: after DISC" % mode)
    check(file_bytes(path, 8192, 65536) == data, "%s: the WRITE before DISC is in the file" % mode)
    expect(file_bytes(path, 2 * MiB, 512), b"d" * 512, "%s: the second WRITE before DISC" % mode)
    check(file_bytes(path, 3 * MiB, 512) != b"G" * 512, "%s: a WRITE after DISC was carried out" % mode)

# DISC with offset, length and flags set: still a disconnect, no reply
with Client() as c:
    c.connect()
    c.request(CMD_DISC, 4096, 4096, flags=CMD_FLAG_FUA)
    c.expect_closed("DISC with nonzero fields")

# hang up without DISC, with requests in flight whose replies nobody reads
with Client() as c:
    c.connect()
    for i in range(16):
        c.request(CMD_READ, i * MiB, MiB)
    c.request(CMD_WRITE, 0, 65536, payload=file_bytes(path, 0, 65536))
with Client() as c:
    c.connect()
    # hang up in the middle of a WRITE payload
    c.send(c.header(CMD_WRITE, 0, 65536)[0] + file_bytes(path, 0, 1000))
EOF

nbd_done
