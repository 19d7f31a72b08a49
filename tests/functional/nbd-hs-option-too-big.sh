#!/bin/bash
# Handshake: option data over the 64 KiB limit is read and dropped in pieces and
# answered NBD_REP_ERR_TOO_BIG, and option parsing goes on. 64 KiB itself is
# accepted. A 100 MiB LIST_META_CONTEXT sent in 1 MiB pieces must not make the
# daemon's memory grow by anything like 100 MiB (VmHWM, the peak RSS). An
# EXPORT_NAME over the limit cannot be answered: the server closes.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "oversized options"
from nbdraw import *

pid = int(os.environ["BDF_PID"])
LIMIT = 64 * 1024

with Client() as c:
    c.greeting()
    c.structured_reply()
    # exactly 64 KiB: a well-formed LIST_META_CONTEXT whose queries (strings of
    # at most 4000 bytes, in an unknown namespace) fill the limit; it is parsed
    # and the queries are ignored
    queries, room = [], LIMIT - len(c.meta_data("disk", []))
    while room:
        n = min(room, 4004)
        queries.append(b"x-pad:" + b"p" * (n - 4 - 6))
        room -= n
    data = c.meta_data("disk", queries)
    expect(len(data), LIMIT, "test data length")
    expect(c.option(OPT_LIST_META_CONTEXT, data), [(OPT_LIST_META_CONTEXT, REP_ACK, b"")],
           "a 64 KiB option")
    # one byte more: too big (the data is junk; it is never parsed)
    r = c.option(OPT_LIST_META_CONTEXT, data + b"!")
    expect(len(r), 1, "one reply")
    expect(r[0].type, REP_ERR_TOO_BIG, "a 64 KiB + 1 option")
    # too big for an option the server does not know, too
    expect(c.option_final(4242, bytes(LIMIT + 1)), REP_ERR_TOO_BIG, "unknown option over the limit")
    expect(c.list_meta("disk", ["base:"]), ["base:allocation"], "parsing goes on")

    # 100 MiB in 1 MiB pieces
    before = rss_kib(pid, "VmHWM")
    size = 100 * MiB
    c.send_option(OPT_LIST_META_CONTEXT, length=size)
    piece = b"\xa5" * MiB
    for _ in range(size // MiB):
        c.send(piece)
    r = c.read_reply()
    expect((r.opt, r.type), (OPT_LIST_META_CONTEXT, REP_ERR_TOO_BIG), "a 100 MiB option")
    grew = rss_kib(pid, "VmHWM") - before
    check(grew < 16 * 1024, "the daemon's peak RSS grew by %d KiB for a 100 MiB option" % grew)
    # the next option is parsed from the right place
    expect(c.list_meta("disk", []), ["base:allocation"], "LIST_META_CONTEXT after 100 MiB")
    c.go("disk")
    expect(c.read(0, 4096), (0, file_bytes(os.environ["DISK"], 0, 4096)), "READ after GO")

# the longest length a header can claim: TOO_BIG once the data has been read
with Client(timeout=60) as c:
    c.greeting()
    c.send_option(OPT_INFO, length=2**32 - 1)
    c.sock.settimeout(0.5)
    try:
        c.read_reply()
        raise AssertionError("the server answered a 4 GiB option before reading its data")
    except socket.timeout:
        pass

# EXPORT_NAME over the limit: no error reply is possible, so the server closes
with Client() as c:
    c.greeting()
    c.send_option(OPT_EXPORT_NAME, b"d" * (LIMIT + 1), may_fail=True)
    c.expect_closed("EXPORT_NAME over the limit")
EOF

nbd_done
