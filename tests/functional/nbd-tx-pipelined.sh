#!/bin/bash
# Transmission: 64 pipelined requests, READs and WRITEs mixed (READs of regions no
# request in flight writes; WRITEs of 64 KiB slots of their own, with payloads up
# to 1 MiB in total), with cookies that are any 64-bit value (0, 2^64-1, random):
# every cookie is answered exactly once, with no chunk after its DONE, with the
# right data; replies may come in any order. Then the written slots read back.
# In each of simple, structured and extended modes; the sending happens in a
# second thread, so neither side blocks on a full socket.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "pipelined requests"
from nbdraw import *
import random

path = os.environ["DISK"]
rnd = random.Random(20261122)
for mode in ("simple", "structured", "extended"):
    disk = bytearray(file_bytes(path))
    with Client(timeout=30) as c:
        c.connect(structured=mode == "structured", extended=mode == "extended")
        x = CMD_FLAG_PAYLOAD_LEN if mode == "extended" else 0
        reqs, expected = [], {}
        cookies = [0, 2**64 - 1]
        while len(cookies) < 64:
            cookie = rnd.getrandbits(64)
            if cookie not in cookies:
                cookies.append(cookie)
        for i, cookie in enumerate(cookies):
            if i % 2:
                # WRITE into slot i of the upper half
                off = 8 * MiB + i * 65536 + rnd.randrange(0, 16) * 512
                data = os.urandom(rnd.randrange(1, 64) * 512)
                reqs.append(dict(cmd=CMD_WRITE, offset=off, length=len(data), flags=x, payload=data, cookie=cookie))
                expected[cookie] = ("w", off, data)
            else:
                # READ in the lower half, unaligned
                off = rnd.randrange(0, 8 * MiB - 300000)
                n = rnd.randrange(1, 300000)
                reqs.append(dict(cmd=CMD_READ, offset=off, length=n, cookie=cookie))
                expected[cookie] = ("r", off, bytes(disk[off:off + n]))
        sent, got = c.pipeline(reqs)
        expect(sorted(got), sorted(cookies), "%s: every cookie answered" % mode)
        for cookie, chunks in got.items():
            kind, off, data = expected[cookie]
            expect(Client.error_of(chunks), 0, "%s: %s at %d" % (mode, kind, off))
            for ch in chunks:
                if mode == "simple":
                    expect(ch.magic, SIMPLE_REPLY_MAGIC, "reply magic")
                elif mode == "extended":
                    expect((ch.magic, ch.offset), (EXT_REPLY_MAGIC, off), "extended reply magic and offset")
            if kind == "r":
                check(Client.assemble(off, len(data), chunks) == data, "%s: READ %d+%d data" % (mode, off, len(data)))
            else:
                disk[off:off + len(data)] = data
        for cookie, (kind, off, data) in expected.items():
            if kind == "w":
                expect(c.read(off, len(data)), (0, data), "%s: read back the WRITE at %d" % (mode, off))
        expect(c.cmd(CMD_FLUSH)[0], 0, "FLUSH")
    check(file_bytes(path) == bytes(disk), "%s: the file holds every WRITE" % mode)
EOF

nbd_done
