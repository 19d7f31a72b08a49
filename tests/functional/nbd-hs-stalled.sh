#!/bin/bash
# Handshake: --handshake-timeout 2. A client that connects and sends nothing is
# closed after about 2 s (between 1.5 and 5 s); so is one that stops after the
# client flags, one that stops after a good option, and one that drips a valid
# handshake one byte every 0.2 s (the limit is on the whole handshake, not on
# each read). A client that finishes its handshake in time is not affected.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start --handshake-timeout 2

$PY - <<'EOF' || fail "stalled handshakes"
from nbdraw import *

def closed_in_time(c, t0, what, before=b""):
    """C is closed 1.5 to 5 s after T0, and the server sent BEFORE until then."""
    got = c.wait_closed(timeout=5.5 - (time.monotonic() - t0))
    took = time.monotonic() - t0
    expect(got, before, "%s: what the server sent before closing" % what)
    check(1.5 <= took <= 5.0, "%s: closed after %.2f s" % (what, took))

t0 = time.monotonic()
silent = Client()         # reads the greeting, sends nothing
silent.read_greeting()
unread = Client()         # does not even read the greeting
flags_only = Client()     # stops after the client flags
flags_only.greeting()
one_option = Client()     # stops after one option
one_option.greeting()
one_option.list_exports()
closed_in_time(silent, t0, "a client that sends nothing")
closed_in_time(unread, t0, "a client that reads nothing",
               before=struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
closed_in_time(flags_only, t0, "a client that stops after its flags")
closed_in_time(one_option, t0, "a client that stops after one option")
for c in (silent, unread, flags_only, one_option):
    c.close()

# a drip-fed handshake: each byte in time for the previous read, but the whole
# handshake takes longer than the limit
with Client() as c:
    t0 = time.monotonic()
    c.read_greeting()
    msg = struct.pack(">I", FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
    msg += struct.pack(">QII", IHAVEOPT, OPT_GO, 10) + c.info_data("disk")
    try:
        for b in msg:
            if time.monotonic() - t0 > 5.5:
                break
            c.send(bytes([b]))
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    closed_in_time(c, t0, "a drip-fed handshake")

# a prompt client with the same limit
with Client() as c:
    c.connect("disk")
    time.sleep(2.5)   # idle in transmission: no limit there
    expect(c.read(0, 4096), (0, file_bytes(os.environ["DISK"], 0, 4096)), "READ 2.5 s after GO")
EOF

nbd_done
