#!/bin/bash
# Transmission flags, as NBD_INFO_EXPORT reports them. The rw export advertises
# HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES, SEND_CACHE,
# SEND_FAST_ZERO and CAN_MULTI_CONN, plus SEND_DF once structured replies or
# extended headers are negotiated (and not before). The ro export has READ_ONLY
# and not TRIM, WRITE_ZEROES or FAST_ZERO (spec: FAST_ZERO MUST be clear without
# WRITE_ZEROES). BLOCK_STATUS_PAYLOAD (not implemented) and RESIZE are never set.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "transmission flags"
from nbdraw import *

RW = (FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES
      | FLAG_SEND_CACHE | FLAG_SEND_FAST_ZERO | FLAG_CAN_MULTI_CONN)
NEVER = FLAG_BLOCK_STATUS_PAYLOAD | FLAG_SEND_RESIZE | 0xE000

def flags(mode, name):
    with Client() as c:
        c.greeting()
        if mode == "structured":
            c.structured_reply()
        elif mode == "extended":
            c.extended_headers()
        final, infos = c.info(name)
        expect(final, REP_ACK, "INFO %s" % name)
        f = c.export_info(infos)[1]
        c.go(name)
        expect(c.eflags, f, "GO gives the flags INFO gave")
        return f

for mode in ("simple", "structured", "extended"):
    f = flags(mode, "disk")
    check(f & RW == RW, "%s rw flags %#x lack %#x" % (mode, f, RW & ~f))
    check(not f & FLAG_READ_ONLY, "%s rw export is READ_ONLY" % mode)
    expect(bool(f & FLAG_SEND_DF), mode != "simple", "%s rw SEND_DF" % mode)
    check(not f & NEVER, "%s rw flags %#x" % (mode, f))

    f = flags(mode, "ro")
    check(f & FLAG_READ_ONLY and f & FLAG_HAS_FLAGS, "%s ro flags %#x" % (mode, f))
    check(not f & (FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO),
          "%s ro flags %#x offer TRIM/WRITE_ZEROES/FAST_ZERO" % (mode, f))
    expect(bool(f & FLAG_SEND_DF), mode != "simple", "%s ro SEND_DF" % mode)
    check(not f & NEVER, "%s ro flags %#x" % (mode, f))
EOF

nbd_done
