#!/bin/bash
# Transmission: clients that stop in the middle of a request (half a header; a
# WRITE header and half its payload; an extended header with a 32 MiB payload
# promised and 1 byte sent) hold only their own connection: other clients are
# served at once, and SIGTERM still stops the daemon promptly (within 5 s) with
# exit 0, closing the stalled connections.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

# The stalled clients live in a background process until the server closes them
# (or 30 s pass); it reports how long each took to be closed after "stop".
$PY - >"$T/holder.out" 2>&1 <<'EOF' &
from nbdraw import *

clients = []
for mode in ("half header", "half payload", "extended payload"):
    c = Client(timeout=30)
    c.connect(extended=mode == "extended payload")
    if mode == "half header":
        c.send(c.header(CMD_READ, 0, 512)[0][:13])
    elif mode == "half payload":
        c.send(c.header(CMD_WRITE, 0, 65536)[0] + b"h" * 30000)
    else:
        c.send(c.header(CMD_WRITE, 0, 32 * MiB, CMD_FLAG_PAYLOAD_LEN)[0] + b"h")
    clients.append((mode, c))
open(os.path.join(os.path.dirname(os.environ["SOCK"]), "holder.ready"), "w").close()
for mode, c in clients:
    try:
        print(mode, "closed" if c.wait_closed(timeout=30) == b"" else "data")
    except AssertionError:
        print(mode, "still open")
EOF
HOLDER=$!
for _ in $(seq 100); do [ -e "$T/holder.ready" ] && break; sleep 0.1; done
[ -e "$T/holder.ready" ] || { cat "$T/holder.out"; fail "the stalled clients did not start"; }

$PY - <<'EOF' || fail "a client while others are stalled"
from nbdraw import *
t0 = time.monotonic()
with Client(timeout=5) as c:
    c.connect()
    expect(c.read(0, 65536), (0, file_bytes(os.environ["DISK"], 0, 65536)), "READ")
    expect(c.write(MiB, b"n" * 4096), 0, "WRITE")
check(time.monotonic() - t0 < 5, "a new client took %.1f s" % (time.monotonic() - t0))
EOF

bdf_alive
"$PY" "$BDF_SRCDIR/tests/functional/nbdraw.py" check "$SOCK" disk "$DISK" || fail "a well-behaved client failed"
start=$(date +%s%N)
bdf_stop
took=$(( ($(date +%s%N) - start) / 1000000 ))
wait "$HOLDER" || true
cat "$T/holder.out"
[ "$took" -lt 5000 ] || fail "SIGTERM took $took ms with stalled clients"
[ "$(grep -c ' closed$' "$T/holder.out")" -eq 3 ] || fail "stalled clients were not closed: $(cat "$T/holder.out")"
note "ok (stopped in $took ms)"
