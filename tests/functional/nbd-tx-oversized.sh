#!/bin/bash
# Transmission: payloads over the 32 MiB maximum. A 33 MiB READ is EINVAL (no data
# follows the simple error reply); a 33 MiB WRITE has its payload read and
# dropped, then EINVAL, and the next request on the connection works; nothing was
# written. 32 MiB itself works both ways. The daemon's memory does not grow by
# anything like the oversized payloads (VmHWM).
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
mkimage "$DISK" 40
nbd_start

$PY - <<'EOF' || fail "oversized requests"
from nbdraw import *

pid = int(os.environ["BDF_PID"])
path = os.environ["DISK"]
disk = file_bytes(path)
for mode in ("simple", "structured"):
    with Client(timeout=60) as c:
        c.connect(structured=mode == "structured")
        expect(c.cmd(CMD_READ, 0, 33 * MiB)[0], EINVAL, "%s: READ of 33 MiB" % mode)
        expect(c.cmd(CMD_READ, 0, 32 * MiB + 1)[0], EINVAL, "%s: READ of 32 MiB + 1" % mode)
        expect(c.read(4096, 4096), (0, disk[4096:8192]), "%s: the stream is in sync after the READs" % mode)
        before = rss_kib(pid, "VmHWM")
        big = os.urandom(33 * MiB)
        expect(c.write(0, big), EINVAL, "%s: WRITE of 33 MiB" % mode)
        expect(c.write(0, big[:32 * MiB + 1]), EINVAL, "%s: WRITE of 32 MiB + 1" % mode)
        grew = rss_kib(pid, "VmHWM") - before
        check(grew < 16 * 1024, "%s: peak RSS grew by %d KiB for refused 33 MiB WRITEs" % (mode, grew))
        expect(c.read(0, 4096), (0, disk[:4096]), "%s: the stream is in sync after the WRITEs" % mode)
        expect(file_bytes(path), disk, "%s: nothing was written" % mode)

with Client(timeout=60) as c:
    c.connect()
    err, data = c.read(MiB, 32 * MiB)
    expect(err, 0, "a 32 MiB READ")
    check(data == disk[MiB:33 * MiB], "32 MiB READ data")
    new = os.urandom(32 * MiB)
    expect(c.write(MiB, new), 0, "a 32 MiB WRITE")
    expect(c.read(MiB, 4096), (0, new[:4096]), "READ after a 32 MiB WRITE")
    expect(c.cmd(CMD_FLUSH)[0], 0, "FLUSH")
check(file_bytes(path, MiB, 32 * MiB) == new, "the 32 MiB WRITE is in the file")
EOF

nbd_done
