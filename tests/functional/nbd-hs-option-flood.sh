#!/bin/bash
# Handshake: at most 1024 options per handshake. 1023 options and a GO (the
# 1024th) work; the 1025th option is not answered: the server closes.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "option flood"
from nbdraw import *

with Client() as c:
    c.greeting()
    for i in range(1023):
        expect(c.option_final(42, b"x"), REP_ERR_UNSUP, "option %d" % (i + 1))
    c.go("disk")
    expect(c.read(0, 512), (0, file_bytes(os.environ["DISK"], 0, 512)), "READ after 1024 options")

with Client() as c:
    c.greeting()
    for i in range(1024):
        expect(c.option_final(OPT_LIST if i % 2 else 42), REP_ACK if i % 2 else REP_ERR_UNSUP,
               "option %d" % (i + 1))
    c.send_option(OPT_LIST, may_fail=True)
    c.expect_closed("the 1025th option")

# the same flood, without waiting for the replies
with Client() as c:
    c.greeting()
    c.send(struct.pack(">QII", IHAVEOPT, 42, 0) * 2000, may_fail=True)
    got = c.wait_closed()
    types = []
    while got:
        magic, opt, rtype, length = struct.unpack(">QIII", got[:20])
        expect((magic, opt), (REP_MAGIC, 42), "reply header")
        types.append(rtype)
        got = got[20 + length:]
    expect(types, [REP_ERR_UNSUP] * 1024, "1024 replies, then close")
EOF

nbd_done
