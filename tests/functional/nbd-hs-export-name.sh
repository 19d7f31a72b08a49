#!/bin/bash
# Handshake: NBD_OPT_EXPORT_NAME. The reply is size + transmission flags, then 124
# zero bytes unless NO_ZEROES was negotiated; the empty name is the first device
# (disk); the flags are those GO gives; and the session serves simple replies.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "NBD_OPT_EXPORT_NAME"
from nbdraw import *

SIZE = 16 * MiB
with Client() as c:
    c.greeting()
    _, infos = c.info("ro")
    ro_flags = c.export_info(infos)[1]
    _, infos = c.info("")
    disk_flags = c.export_info(infos)[1]

for cflags, name, path, flags in ((FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, "ro", "RO", ro_flags),
                                  (FLAG_C_FIXED_NEWSTYLE, "ro", "RO", ro_flags),
                                  (FLAG_C_FIXED_NEWSTYLE, "", "DISK", disk_flags),
                                  (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, "", "DISK", disk_flags)):
    with Client() as c:
        c.greeting(cflags)
        c.export_name(name, no_zeroes=bool(cflags & FLAG_C_NO_ZEROES))
        expect((c.size, c.eflags), (SIZE, flags), "EXPORT_NAME %r: size and flags" % name)
        # nothing more follows the reply: the first reply after it is the READ's
        expect(c.read(SIZE - 4096, 4096), (0, file_bytes(os.environ[path], SIZE - 4096, 4096)),
               "READ after EXPORT_NAME %r" % name)
        c.disconnect()
        c.expect_closed("DISC")

# options before EXPORT_NAME still count: structured replies apply
with Client() as c:
    c.greeting()
    c.structured_reply()
    c.export_name("disk")
    check(c.eflags & FLAG_SEND_DF, "SEND_DF after structured replies")
    err, chunks = c.cmd(CMD_READ, 0, 4096)
    expect((err, chunks[0].magic), (0, STRUCTURED_REPLY_MAGIC), "structured READ reply")
EOF

nbd_done
