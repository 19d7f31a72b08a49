#!/bin/bash
# Handshake: an export that does not exist. INFO and GO answer NBD_REP_ERR_UNKNOWN
# (with no NBD_REP_INFO first) and haggling goes on; EXPORT_NAME cannot be
# answered with an error, so the server closes without sending anything. Names
# are exact: "DISK", "disk " and "dis" are unknown.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "unknown export"
from nbdraw import *

with Client() as c:
    c.greeting()
    for name in ("nope", "DISK", "disk ", "dis", "disk\u00e9"):
        for opt in (OPT_INFO, OPT_GO):
            r = c.option(opt, c.info_data(name, (INFO_BLOCK_SIZE, INFO_NAME)))
            expect([x.type for x in r], [REP_ERR_UNKNOWN], "option %d for %r" % (opt, name))
    c.go("disk")

for name in ("nope", "DISK"):
    with Client() as c:
        c.greeting()
        c.send_option(OPT_EXPORT_NAME, name.encode())
        c.expect_closed("EXPORT_NAME %r" % name)
EOF

nbd_done
