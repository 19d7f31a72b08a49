#!/bin/bash
# Handshake: malformed NBD_OPT_INFO / NBD_OPT_GO payloads are NBD_REP_ERR_INVALID
# with no NBD_REP_INFO before the error, and haggling goes on: a name length
# beyond the option, an information count that does not match the option length
# (too many, too few, an odd trailing byte), an option too short to hold the
# fields, a NUL in the name, a name over the spec's 4096-byte string limit.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "malformed INFO/GO"
from nbdraw import *

def be32(n): return struct.pack(">I", n)
def be16(n): return struct.pack(">H", n)

bad = {
    "name length beyond the option": be32(1000) + b"disk" + be16(0),
    "name length 2^32-1": be32(0xFFFFFFFF) + b"disk" + be16(0),
    "name length eats the info count": be32(6) + b"disk" + be16(0),
    "info count too large": be32(4) + b"disk" + be16(5) + be16(INFO_BLOCK_SIZE),
    "info count too small": be32(4) + b"disk" + be16(0) + be16(INFO_BLOCK_SIZE),
    "odd trailing byte": be32(4) + b"disk" + be16(1) + be16(INFO_BLOCK_SIZE) + b"\0",
    "empty": b"",
    "too short for the info count": be32(0) + b"\0",
    "five bytes": be32(4) + b"d",
    "NUL in the name": Client.info_data(b"di\0k"),
    "name of 4097 bytes": Client.info_data(b"n" * 4097),
}
with Client() as c:
    c.greeting()
    for what, data in bad.items():
        for opt in (OPT_INFO, OPT_GO):
            r = c.option(opt, data)
            expect(len(r), 1, "%s: no REP_INFO before the error" % what)
            expect(r[0].type, REP_ERR_INVALID, "%s %s" % ("INFO" if opt == OPT_INFO else "GO", what))
    # a 4096-byte name is a valid string; there is no such export
    expect(c.option_final(OPT_INFO, c.info_data(b"n" * 4096)), REP_ERR_UNKNOWN, "a 4096-byte name")
    # haggling went on: GO works
    c.go("disk")
    expect(c.read(0, 512), (0, file_bytes(os.environ["DISK"], 0, 512)), "READ after GO")
EOF

nbd_done
