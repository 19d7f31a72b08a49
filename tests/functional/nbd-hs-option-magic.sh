#!/bin/bash
# Handshake: an option header whose magic is not IHAVEOPT closes the session at
# once, with no reply: as the first option, after a good option, and when the
# magic is the option-reply magic or off by one bit.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "bad option magic"
from nbdraw import *

for magic in (0x1122334455667788, REP_MAGIC, IHAVEOPT ^ 1, 0):
    with Client() as c:
        c.greeting()
        c.send_option(OPT_LIST, magic=magic)
        c.expect_closed("option magic %#x" % magic)

with Client() as c:
    c.greeting()
    c.list_exports()
    c.send_option(OPT_GO, c.info_data("disk"), magic=IHAVEOPT + 1)
    c.expect_closed("bad option magic after a good option")
EOF

nbd_done
