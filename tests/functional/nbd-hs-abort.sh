#!/bin/bash
# Handshake: NBD_OPT_ABORT is answered NBD_REP_ACK and the server closes; data
# with the option is ignored (spec: SHOULD ignore); a client that sends ABORT
# and hangs up without reading the ACK does no harm.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "NBD_OPT_ABORT"
from nbdraw import *

for data in (b"", b"ignored data"):
    with Client() as c:
        c.greeting()
        c.structured_reply()
        expect(c.option(OPT_ABORT, data), [(OPT_ABORT, REP_ACK, b"")], "ABORT with %r" % data)
        c.expect_closed("after ABORT")

for _ in range(20):
    with Client() as c:
        c.greeting()
        c.send_option(OPT_ABORT)
EOF

nbd_done
