#!/bin/bash
# Handshake: 100 connections stalled in the handshake (some silent, some in the
# middle of an option, some that never read) and 20 idle in transmission do not
# block a new client: it negotiates and reads within 5 s, while the stalled ones
# are still there (the handshake timeout is the default 10 s). Closing them all
# at once leaves the daemon well.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "many stalled connections"
from nbdraw import *

stalled = []
for i in range(100):
    c = Client()
    if i % 3 == 1:
        c.greeting()
    elif i % 3 == 2:
        c.greeting()
        c.send_option(OPT_GO, b"\0\0\0\x04di", length=12)
    stalled.append(c)
idle = []
for i in range(20):
    c = Client()
    c.connect("disk")
    idle.append(c)

t0 = time.monotonic()
with Client(timeout=5) as c:
    c.connect("disk", meta=["base:allocation"])
    expect(c.read(MiB, 65536), (0, file_bytes(os.environ["DISK"], MiB, 65536)), "READ")
    expect(c.cmd(CMD_BLOCK_STATUS, 0, MiB)[0], 0, "BLOCK_STATUS")
took = time.monotonic() - t0
check(took < 5.0, "a new client took %.2f s with 100 stalled connections" % took)

# the idle ones still work
for c in idle[:5]:
    expect(c.read(0, 512)[0], 0, "READ on an idle connection")
for c in stalled + idle:
    c.close()
EOF

nbd_done
