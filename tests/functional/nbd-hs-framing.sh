#!/bin/bash
# Handshake: framing does not depend on how bytes arrive. Client flags in two
# pieces, every option dribbled one byte at a time, an option header split around
# its magic: all answered as if sent whole, up to GO and a READ.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "handshake framing"
from nbdraw import *

def dribble(c, data, pause=0.0):
    for b in data:
        c.send(bytes([b]))
        if pause:
            time.sleep(pause)

with Client() as c:
    c.read_greeting()
    flags = struct.pack(">I", FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
    c.send(flags[:2])
    time.sleep(0.1)
    c.send(flags[2:])
    dribble(c, struct.pack(">QII", IHAVEOPT, OPT_LIST, 0), 0.002)
    expect([r.type for r in [c.read_reply(), c.read_reply(), c.read_reply()]],
           [REP_SERVER, REP_SERVER, REP_ACK], "dribbled LIST")
    dribble(c, struct.pack(">QII", IHAVEOPT, OPT_STRUCTURED_REPLY, 0))
    expect(c.read_reply().type, REP_ACK, "dribbled STRUCTURED_REPLY")
    c.structured = True
    q = c.meta_data("disk", ["base:allocation"])
    opt = struct.pack(">QII", IHAVEOPT, OPT_SET_META_CONTEXT, len(q)) + q
    for part in (opt[:5], opt[5:9], opt[9:17], opt[17:30], opt[30:]):
        c.send(part)
        time.sleep(0.05)
    expect([r.type for r in [c.read_reply(), c.read_reply()]], [REP_META_CONTEXT, REP_ACK], "split SET_META_CONTEXT")
    g = c.info_data("disk", (INFO_BLOCK_SIZE,))
    dribble(c, struct.pack(">QII", IHAVEOPT, OPT_GO, len(g)) + g)
    replies = []
    while not replies or replies[-1].type != REP_ACK:
        replies.append(c.read_reply())
        check(replies[-1].type in (REP_INFO, REP_ACK), "GO reply %r" % (replies[-1],))
    expect(c.read(0, 4096), (0, file_bytes(os.environ["DISK"], 0, 4096)), "READ")
    expect(c.cmd(CMD_BLOCK_STATUS, 0, 4096)[0], 0, "BLOCK_STATUS")
EOF

nbd_done
