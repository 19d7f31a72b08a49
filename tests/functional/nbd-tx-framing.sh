#!/bin/bash
# Transmission: framing does not depend on how bytes arrive. A request dribbled
# one byte at a time (header and payload), a header split around its magic, a
# 256 KiB WRITE payload in 1000-byte sends, and 200 requests in one send are all
# served correctly, in simple, structured and extended modes.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "framing"
from nbdraw import *

path = os.environ["DISK"]

def start(c, cmd, offset, length, flags=0):
    """A request header, registered as in flight, not yet sent."""
    hdr, cookie = c.header(cmd, offset, length, flags)
    c.pending[cookie] = (cmd, length)
    return hdr, cookie

for mode in ("simple", "structured", "extended"):
    disk = file_bytes(path)
    with Client() as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        x = CMD_FLAG_PAYLOAD_LEN if mode == "extended" else 0

        data = os.urandom(600)
        hdr, cookie = start(c, CMD_WRITE, 12345, len(data), x)
        for b in hdr + data:
            c.send(bytes([b]))
        expect(Client.error_of(c.reply(cookie)), 0, "%s: dribbled WRITE" % mode)
        hdr, cookie = start(c, CMD_READ, 12345, 600)
        for b in hdr:
            c.send(bytes([b]))
            time.sleep(0.001)
        expect(c.assemble(12345, 600, c.reply(cookie)), data, "%s: dribbled READ" % mode)

        hdr, cookie = start(c, CMD_READ, 0, 512)
        for part in (hdr[:3], hdr[3:5], hdr[5:]):
            c.send(part)
            time.sleep(0.05)
        expect(c.assemble(0, 512, c.reply(cookie)), disk[:512], "%s: header split around the magic" % mode)

        big = os.urandom(256 * 1024)
        hdr, cookie = start(c, CMD_WRITE, MiB, len(big), x)
        c.send(hdr)
        for i in range(0, len(big), 1000):
            c.send(big[i:i + 1000])
        expect(Client.error_of(c.reply(cookie)), 0, "%s: WRITE in small pieces" % mode)
        expect(c.read(MiB, len(big)), (0, big), "%s: read back" % mode)

        blob, cookies = b"", []
        for i in range(200):
            hdr, cookie = start(c, CMD_READ, 2 * MiB + i * 4096, 512)
            blob += hdr
            cookies.append(cookie)
        c.send(blob)
        got = c.replies(cookies)
        for i, cookie in enumerate(cookies):
            off = 2 * MiB + i * 4096
            expect(c.assemble(off, 512, got[cookie]), disk[off:off + 512], "%s: request %d of 200" % (mode, i))
EOF

nbd_done
