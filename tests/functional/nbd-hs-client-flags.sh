#!/bin/bash
# Handshake: client flags. A flag the server does not know (bit 7, bit 31) closes
# the session (spec: "the server MUST drop the TCP connection if the client sets an
# unknown flag"), and so does a client that does not set NBD_FLAG_C_FIXED_NEWSTYLE
# (this server speaks fixed newstyle only). The server sends nothing more.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "client flags"
from nbdraw import *

for cflags, what in ((FLAG_C_FIXED_NEWSTYLE | 1 << 7, "unknown client flag bit 7"),
                     (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES | 1 << 31, "unknown client flag bit 31"),
                     (0, "no NBD_FLAG_C_FIXED_NEWSTYLE"),
                     (FLAG_C_NO_ZEROES, "NO_ZEROES without FIXED_NEWSTYLE")):
    with Client() as c:
        c.greeting(cflags)
        # an option right behind the flags must not be answered
        c.send_option(OPT_LIST, may_fail=True)
        c.expect_closed(what)

# the greeting alone is fine: FIXED_NEWSTYLE, and FIXED_NEWSTYLE|NO_ZEROES
for cflags in (FLAG_C_FIXED_NEWSTYLE, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES):
    with Client() as c:
        c.greeting(cflags)
        expect(c.list_exports(), [("disk", os.environ["DISK"]), ("ro", os.environ["RO"])], "LIST")
EOF

nbd_done
