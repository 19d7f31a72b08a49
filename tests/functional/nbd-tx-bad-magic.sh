#!/bin/bash
# Transmission: a request whose magic is wrong closes the connection with no reply:
# garbage, the reply magics, the extended magic on a compact connection and the
# compact magic on an extended one. Requests answered before it are answered.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "bad request magic"
from nbdraw import *

cases = [(False, 0xDEADBEEF), (False, SIMPLE_REPLY_MAGIC), (False, EXT_REQUEST_MAGIC), (False, 0x12560953),
         (True, REQUEST_MAGIC), (True, EXT_REPLY_MAGIC), (True, 0)]
for extended, magic in cases:
    with Client() as c:
        c.connect(extended=extended)
        expect(c.read(0, 512)[0], 0, "READ first")
        c.request(CMD_READ, 0, 512, magic=magic, may_fail=True)
        c.expect_closed("magic %#x (extended=%s)" % (magic, extended))

# a compact client that skips the handshake: its first request reads as flags/options
with Client() as c:
    c.read_greeting()
    c.send(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 1, 0, 512), may_fail=True)
    c.expect_closed("a request instead of the client flags")
EOF

nbd_done
