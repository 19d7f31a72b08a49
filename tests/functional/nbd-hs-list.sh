#!/bin/bash
# Handshake: NBD_OPT_LIST gives one NBD_REP_SERVER per export, then ACK; LIST
# with data is NBD_REP_ERR_INVALID (and the data does not desynchronise the
# stream); LIST may be repeated.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "NBD_OPT_LIST"
from nbdraw import *

with Client() as c:
    c.greeting()
    exports = c.list_exports()
    expect([n for n, _ in exports], ["disk", "ro"], "LIST names")
    expect(c.option(OPT_LIST, b"x")[-1].type, REP_ERR_INVALID, "LIST with data")
    expect(len(c.option(OPT_LIST, c.info_data("disk"))), 1, "LIST with data: the error only")
    expect(c.list_exports(), exports, "LIST again")
    c.go("ro")
    check(c.eflags & FLAG_READ_ONLY, "ro is read-only")
EOF

nbd_done
