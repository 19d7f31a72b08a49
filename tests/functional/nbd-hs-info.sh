#!/bin/bash
# Handshake: what NBD_OPT_INFO and NBD_OPT_GO answer. NBD_INFO_EXPORT always (12
# bytes); NBD_INFO_BLOCK_SIZE always, min 1, preferred 4096, max 32 MiB, even when
# not asked for; NAME and DESCRIPTION when asked; unknown information requests
# (and a duplicated one) are ignored; each info type comes at most once; the
# empty name is the first device; INFO then GO with the same request give the
# same information.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "INFO/GO replies"
from nbdraw import *

BLOCK_SIZES = struct.pack(">III", 1, 4096, 32 * MiB)
with Client() as c:
    c.greeting()
    final, infos = c.info("disk", ())
    expect(final, REP_ACK, "INFO with no requests")
    expect(sorted(infos), [INFO_EXPORT, INFO_BLOCK_SIZE], "infos sent unasked")
    expect(infos[INFO_BLOCK_SIZE], BLOCK_SIZES, "block sizes")
    expect(c.export_info(infos)[0], 16 * MiB, "size")

    final, infos = c.info("", (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 999, 0xFFFF, INFO_NAME))
    expect(final, REP_ACK, "INFO of the default export")
    expect(infos[INFO_NAME], b"disk", "the default export is the first device")
    check(infos[INFO_DESCRIPTION], "a description was asked for")
    expect(infos[INFO_BLOCK_SIZE], BLOCK_SIZES, "block sizes")
    check(not set(infos) - {INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE},
          "unknown info types sent: %r" % sorted(infos))

    final, ro = c.info("ro", (INFO_NAME,))
    expect((final, ro[INFO_NAME]), (REP_ACK, b"ro"), "INFO ro")

    request = (INFO_BLOCK_SIZE, INFO_NAME)
    _, before = c.info("disk", request)
    after = c.go("disk", request)
    expect(after, before, "GO right after INFO with the same request")
    expect(c.read(0, 4096), (0, file_bytes(os.environ["DISK"], 0, 4096)), "READ after GO")
EOF

nbd_done
