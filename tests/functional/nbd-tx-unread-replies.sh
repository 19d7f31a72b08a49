#!/bin/bash
# Transmission: a client that sends 64 READs of 1 MiB and never reads a reply
# blocks only its own connection (the server's workers wait to send): other
# clients are served at once. When it hangs up, the daemon recovers; and SIGTERM
# with such a client connected still ends with exit 0 (after the shutdown grace
# period, at most about 10 s).
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "unread replies"
from nbdraw import *

pid = int(os.environ["BDF_PID"])
def flood():
    c = Client()
    c.connect(structured=True)
    for i in range(64):
        c.request(CMD_READ, (i % 16) * MiB, MiB)
    return c

hogs = [flood() for _ in range(3)]
time.sleep(0.5)
t0 = time.monotonic()
with Client(timeout=5) as c:
    c.connect()
    expect(c.read(0, MiB), (0, file_bytes(os.environ["DISK"], 0, MiB)), "READ while others do not read")
check(time.monotonic() - t0 < 5, "a new client took %.1f s" % (time.monotonic() - t0))
# one hog reads its replies after all: every one is there
c = hogs[0]
got = c.replies(list(c.pending))
expect(len(got), 64, "replies to the hog that woke up")
for h in hogs:
    h.close()
EOF
bdf_alive
"$PY" "$BDF_SRCDIR/tests/functional/nbdraw.py" check "$SOCK" disk "$DISK" || fail "a well-behaved client failed"

# now SIGTERM with a client that does not read
$PY - >"$T/holder.out" 2>&1 <<'EOF' &
from nbdraw import *
c = Client(timeout=30)
c.connect(structured=True)
for i in range(64):
    c.request(CMD_READ, (i % 16) * MiB, MiB)
open(os.path.join(os.path.dirname(os.environ["SOCK"]), "holder.ready"), "w").close()
time.sleep(30)
EOF
HOLDER=$!
for _ in $(seq 100); do [ -e "$T/holder.ready" ] && break; sleep 0.1; done
sleep 0.5
start=$(date +%s%N)
bdf_stop
took=$(( ($(date +%s%N) - start) / 1000000 ))
kill "$HOLDER" 2>/dev/null || true
wait "$HOLDER" 2>/dev/null || true
[ "$took" -lt 15000 ] || fail "SIGTERM took $took ms with a client that does not read"
note "ok (stopped in $took ms)"
