#!/bin/bash
# Transmission: FLUSH's offset and length are reserved and MUST be zero; a FLUSH
# with either set is EINVAL and the connection goes on. FLUSH with FUA works; a
# FLUSH with a flag that is not valid for it (NO_HOLE, bit 10) is EINVAL (spec:
# "SHOULD return NBD_EINVAL if it receives a request with a flag not explicitly
# documented as applicable to the given request").
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "FLUSH"
from nbdraw import *

for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        for off, n in ((0, 512), (512, 0), (2**63, 2**31), (1, 1)):
            expect(c.cmd(CMD_FLUSH, off, n)[0], EINVAL, "%s: FLUSH %d+%d" % (mode, off, n))
        expect(c.cmd(CMD_FLUSH)[0], 0, "%s: FLUSH" % mode)
        expect(c.cmd(CMD_FLUSH, flags=CMD_FLAG_FUA)[0], 0, "%s: FLUSH with FUA" % mode)
        expect(c.read(0, 512)[0], 0, "%s: READ after" % mode)
for mode in ("simple", "structured", "extended"):
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        for flags in (CMD_FLAG_NO_HOLE, 1 << 10, CMD_FLAG_REQ_ONE):
            err, chunks = c.cmd(CMD_FLUSH, flags=flags)
            expect(err, EINVAL, "%s: FLUSH with flags %#x (reply %r)" % (mode, flags, chunks))
EOF

nbd_done
