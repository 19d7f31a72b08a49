#!/bin/bash
# Handshake: option lengths that lie. A header that claims less data than follows
# makes the rest read as the next header, whose magic is wrong: the server closes.
# A header that claims more than follows makes the server wait for the rest: the
# next option's bytes are taken as data (and answered as such), a half-close
# mid-option ends the session, and a stall is ended by --handshake-timeout.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start --handshake-timeout 2

$PY - <<'EOF' || fail "lying option lengths"
from nbdraw import *

# LIST claiming 0 bytes, followed by 16 bytes of junk: the junk is the next header
with Client() as c:
    c.greeting()
    c.send_option(OPT_LIST, b"\x55" * 16, length=0)
    replies = []
    try:
        while True:
            replies.append(c.read_reply())
    except Closed:
        pass
    expect([r.type for r in replies], [REP_SERVER, REP_SERVER, REP_ACK], "LIST answered, then the junk closes")

# GO claiming 4 bytes fewer than its data: the tail is read as a header
with Client() as c:
    c.greeting()
    data = c.info_data("disk", (INFO_BLOCK_SIZE,))
    c.send_option(OPT_GO, data + b"\0" * 16, length=len(data) - 4)
    expect(c.read_reply().type, REP_ERR_INVALID, "GO with a short length")
    c.expect_closed("the rest of the GO as a header")

# STRUCTURED_REPLY claiming 20 bytes, then a whole LIST option (16 bytes) and 4
# more: the LIST bytes are the STRUCTURED_REPLY's data
with Client() as c:
    c.greeting()
    c.send_option(OPT_STRUCTURED_REPLY, length=20)
    c.send_option(OPT_LIST)
    c.send(b"abcd")
    expect(c.read_reply().type, REP_ERR_INVALID, "STRUCTURED_REPLY with (LIST as) data")
    expect(c.option_final(OPT_STRUCTURED_REPLY), REP_ACK, "the stream is in sync again")

# half the data, then the client shuts down its side: the server closes
with Client() as c:
    c.greeting()
    data = c.info_data("disk")
    c.send_option(OPT_INFO, data[:5], length=len(data))
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed("EOF in the middle of an option")

# half the data, then nothing: the handshake timeout (2 s) ends it
with Client() as c:
    c.greeting()
    t0 = time.monotonic()
    c.send_option(OPT_INFO, data[:5], length=len(data))
    c.expect_closed("a stall in the middle of an option", timeout=5)
    check(time.monotonic() - t0 > 1.5, "closed after %.1f s, before the timeout" % (time.monotonic() - t0))

# half a header, then nothing
with Client() as c:
    c.greeting()
    c.send(struct.pack(">Q", IHAVEOPT) + b"\0\0")
    c.expect_closed("a stall in the middle of an option header", timeout=5)
EOF

nbd_done
