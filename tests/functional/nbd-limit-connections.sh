#!/bin/bash
# Limits: with --max-connections 3 and three clients in (one in transmission,
# one in the middle of the handshake, one that has not said a word), a fourth
# gets EOF at once, before any greeting, and the log says why; a flood of
# refused clients makes one log line, not one each. The three are served as
# before; once one hangs up, a new client gets in.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start --max-connections 3

$PY - <<'EOF' || fail "max-connections"
from nbdraw import *

disk = os.environ["DISK"]
log = os.path.join(os.path.dirname(os.environ["SOCK"]), "bdfilterd.log")

def refusals():
    return sum("--max-connections" in line for line in open(log))

def admitted(timeout=5.0):
    """A new client that gets in within TIMEOUT (refused ones retry)."""
    deadline = time.monotonic() + timeout
    while True:
        c = Client()
        try:
            c.connect()
            return c
        except Closed:
            c.close()
            check(time.monotonic() < deadline, "no client got in within %.0f s" % timeout)
            time.sleep(0.1)

c1 = Client()
c1.connect()
c2 = Client()
c2.greeting()
c3 = Client()
time.sleep(0.5)  # the daemon has accepted all three

t0 = time.monotonic()
c4 = Client()
c4.expect_closed("a fourth connection", timeout=2)
took = time.monotonic() - t0
check(took < 2, "the fourth connection was closed after %.1f s" % took)
for _ in range(50):
    if refusals() > 0:
        break
    time.sleep(0.1)
expect(refusals(), 1, "log lines about the refused connection")

for _ in range(50):
    with Client() as c:
        c.expect_closed("a connection in the flood", timeout=2)
time.sleep(0.5)
check(refusals() <= 2, "%d log lines for 51 refused connections" % refusals())

# the three in are served as before
expect(c1.read(0, 65536), (0, file_bytes(disk, 0, 65536)), "READ on the first connection")
c2.structured_reply()
c2.go()
expect(c2.read(MiB, 4096), (0, file_bytes(disk, MiB, 4096)), "READ on the second connection")
c3.connect()
expect(c3.read(0, 512), (0, file_bytes(disk, 0, 512)), "READ on the third connection")

# one leaves: a new client gets in, and then there is no room again
c1.disconnect()
c1.close()
c5 = admitted()
expect(c5.read(2 * MiB, 4096), (0, file_bytes(disk, 2 * MiB, 4096)), "READ on the new connection")
with Client() as c:
    c.expect_closed("a connection over the limit again", timeout=2)

for c in (c2, c3, c5):
    c.close()
admitted().close()  # all three are gone: nbd_done's clients get in
EOF

nbd_done
