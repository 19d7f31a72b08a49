#!/bin/bash
# Handshake: NBD_OPT_STARTTLS on a server without TLS is NBD_REP_ERR_POLICY (and
# with data NBD_REP_ERR_INVALID); haggling goes on in plain text.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "NBD_OPT_STARTTLS"
from nbdraw import *

with Client() as c:
    c.greeting()
    expect([r.type for r in c.option(OPT_STARTTLS)], [REP_ERR_POLICY], "STARTTLS")
    expect([r.type for r in c.option(OPT_STARTTLS, b"x")], [REP_ERR_INVALID], "STARTTLS with data")
    expect([r.type for r in c.option(OPT_STARTTLS)], [REP_ERR_POLICY], "STARTTLS again")
    c.structured_reply()
    c.go("disk")
    expect(c.read(0, 4096), (0, file_bytes(os.environ["DISK"], 0, 4096)), "READ")
EOF

nbd_done
