#!/bin/bash
# Transmission: BLOCK_STATUS without a selected metadata context is EINVAL (spec:
# SHOULD) and the connection goes on: with no SET_META_CONTEXT, with a SET that
# selected nothing, with simple replies, and with contexts selected for another
# export than the one GO chose (spec: the same export name).
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "BLOCK_STATUS without a context"
from nbdraw import *

def go_and_check(c, what):
    for flags in (0, CMD_FLAG_REQ_ONE):
        err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 4096, flags)
        expect(err, EINVAL, what)
        check(all(ch.type in (None, REPLY_TYPE_ERROR) for ch in chunks), "%s: no status chunk" % what)
    expect(c.read(0, 512)[0], 0, "%s: READ after" % what)

for extended in (False, True):
    with Client() as c:
        c.connect(extended=extended)
        go_and_check(c, "no SET_META_CONTEXT (extended=%s)" % extended)

with Client() as c:
    c.greeting()
    c.structured_reply()
    expect(c.set_meta("disk", ["base:"]), {}, "SET base: selects nothing")
    c.go("disk")
    go_and_check(c, "a SET that selected nothing")

with Client() as c:
    c.connect(structured=False)
    go_and_check(c, "simple replies")

with Client() as c:
    c.greeting()
    c.structured_reply()
    c.set_meta("ro", ["base:allocation"])
    c.go("disk")
    go_and_check(c, "contexts of another export")
EOF

nbd_done
