#!/bin/bash
# Handshake: options the server does not know (42 with data, 0, 4 = the withdrawn
# PEEK_EXPORT, 0xffffffff) are answered NBD_REP_ERR_UNSUP, their data is skipped,
# and the next option works.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "unknown options"
from nbdraw import *

with Client() as c:
    c.greeting()
    for opt, data in ((42, b"some data that means nothing"), (0, b""), (4, b"\0" * 100),
                      (0xFFFFFFFF, b"x" * 4096), (42, c.info_data("disk"))):
        r = c.option(opt, data)
        expect(len(r), 1, "one reply to option %d" % opt)
        expect((r[0].opt, r[0].type), (opt, REP_ERR_UNSUP), "option %#x" % opt)
    expect([n for n, _ in c.list_exports()], ["disk", "ro"], "LIST after unknown options")
    c.go("disk")
    expect(c.read(4096, 4096), (0, file_bytes(os.environ["DISK"], 4096, 4096)), "READ")
EOF

nbd_done
