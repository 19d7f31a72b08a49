#!/bin/bash
# Handshake: NBD_OPT_STRUCTURED_REPLY and NBD_OPT_EXTENDED_HEADERS. With data:
# NBD_REP_ERR_INVALID (and nothing is negotiated). Twice: the second is
# NBD_REP_ERR_INVALID. STRUCTURED_REPLY after EXTENDED_HEADERS:
# NBD_REP_ERR_EXT_HEADER_REQD. EXTENDED_HEADERS after STRUCTURED_REPLY: ACK.
# EXPORT_NAME after EXTENDED_HEADERS is forbidden to the client: the server closes.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "STRUCTURED_REPLY / EXTENDED_HEADERS"
from nbdraw import *

def only(c, opt, data=b""):
    r = c.option(opt, data)
    expect(len(r), 1, "one reply to option %d" % opt)
    return r[0].type

# structured replies
with Client() as c:
    c.greeting()
    expect(only(c, OPT_STRUCTURED_REPLY, b"x"), REP_ERR_INVALID, "STRUCTURED_REPLY with data")
    expect(only(c, OPT_STRUCTURED_REPLY, bytes(100)), REP_ERR_INVALID, "STRUCTURED_REPLY with 100 bytes")
    expect(only(c, OPT_STRUCTURED_REPLY), REP_ACK, "STRUCTURED_REPLY")
    expect(only(c, OPT_STRUCTURED_REPLY), REP_ERR_INVALID, "STRUCTURED_REPLY twice")
    c.structured = True
    c.go("disk")
    err, chunks = c.cmd(CMD_READ, 0, 512)
    expect(chunks[0].magic, STRUCTURED_REPLY_MAGIC, "structured READ reply")

# refused with data: nothing was negotiated, replies stay simple
with Client() as c:
    c.greeting()
    expect(only(c, OPT_STRUCTURED_REPLY, b"x"), REP_ERR_INVALID, "STRUCTURED_REPLY with data")
    expect(only(c, OPT_EXTENDED_HEADERS, b"x"), REP_ERR_INVALID, "EXTENDED_HEADERS with data")
    c.go("disk")
    check(not c.eflags & FLAG_SEND_DF, "SEND_DF without structured replies")
    err, chunks = c.cmd(CMD_READ, 0, 512)
    expect((err, chunks[0].magic), (0, SIMPLE_REPLY_MAGIC), "simple READ reply")

# extended headers
with Client() as c:
    c.greeting()
    expect(only(c, OPT_EXTENDED_HEADERS, b"x"), REP_ERR_INVALID, "EXTENDED_HEADERS with data")
    expect(only(c, OPT_EXTENDED_HEADERS), REP_ACK, "EXTENDED_HEADERS")
    expect(only(c, OPT_EXTENDED_HEADERS), REP_ERR_INVALID, "EXTENDED_HEADERS twice")
    expect(only(c, OPT_STRUCTURED_REPLY), REP_ERR_EXT_HEADER_REQD, "STRUCTURED_REPLY after EXTENDED_HEADERS")
    expect(only(c, OPT_STRUCTURED_REPLY, b"x"), REP_ERR_INVALID, "STRUCTURED_REPLY with data after EXTENDED")
    c.extended = True
    c.go("disk")
    err, chunks = c.cmd(CMD_READ, 0, 512)
    expect((err, chunks[0].magic), (0, EXT_REPLY_MAGIC), "extended READ reply")

# structured, then extended: extended wins
with Client() as c:
    c.greeting()
    c.structured_reply()
    expect(only(c, OPT_EXTENDED_HEADERS), REP_ACK, "EXTENDED_HEADERS after STRUCTURED_REPLY")
    c.extended = True
    c.go("disk")
    err, chunks = c.cmd(CMD_READ, 0, 512)
    expect((err, chunks[0].magic), (0, EXT_REPLY_MAGIC), "extended READ reply")

# EXPORT_NAME after EXTENDED_HEADERS
with Client() as c:
    c.greeting()
    c.extended_headers()
    c.send_option(OPT_EXPORT_NAME, b"disk")
    c.expect_closed("EXPORT_NAME after EXTENDED_HEADERS")
EOF

nbd_done
