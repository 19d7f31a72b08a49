#!/bin/bash
# Transmission: CAN_MULTI_CONN. Writes on connection A (plain, FUA, WRITE_ZEROES,
# TRIM), then FLUSH on A: a second connection B reads every one of them back, and
# after B's own FLUSH the file holds them. Four connections writing disjoint
# regions at once, each flushing, all see each other's data.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
nbd_start

$PY - <<'EOF' || fail "multi-conn"
from nbdraw import *

path = os.environ["DISK"]
with Client() as a, Client() as b:
    a.connect()
    b.connect(extended=True)
    check(a.eflags & FLAG_CAN_MULTI_CONN and b.eflags & FLAG_CAN_MULTI_CONN, "CAN_MULTI_CONN")
    d1, d2 = os.urandom(MiB), os.urandom(65536)
    expect(a.write(3 * MiB, d1), 0, "WRITE on A")
    expect(a.write(5 * MiB, d2, flags=CMD_FLAG_FUA), 0, "WRITE FUA on A")
    expect(a.cmd(CMD_WRITE_ZEROES, 6 * MiB, 65536)[0], 0, "WRITE_ZEROES on A")
    expect(a.cmd(CMD_FLUSH)[0], 0, "FLUSH on A")
    expect(b.read(3 * MiB, MiB), (0, d1), "B reads A's WRITE")
    expect(b.read(5 * MiB, 65536), (0, d2), "B reads A's FUA WRITE")
    expect(b.read(6 * MiB, 65536), (0, bytes(65536)), "B reads A's zeroes")
    expect(b.cmd(CMD_FLUSH)[0], 0, "FLUSH on B")
    check(file_bytes(path, 3 * MiB, MiB) == d1, "the file has A's WRITE")
    check(file_bytes(path, 5 * MiB, 65536) == d2, "the file has A's FUA WRITE")

import threading
clients = [Client(timeout=30) for _ in range(4)]
datas = [os.urandom(2 * MiB) for _ in clients]
errors = []
def writer(i):
    try:
        c = clients[i]
        c.connect(extended=i % 2 == 1)
        for k in range(8):
            expect(c.write(8 * MiB + i * 2 * MiB + k * 256 * 1024, datas[i][k * 256 * 1024:(k + 1) * 256 * 1024]), 0,
                   "WRITE on connection %d" % i)
        expect(c.cmd(CMD_FLUSH)[0], 0, "FLUSH on connection %d" % i)
    except Exception as e:  # noqa: BLE001
        errors.append(e)
threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(not errors, "writers: %r" % errors)
for i, c in enumerate(clients):
    for j in range(4):
        expect(c.read(8 * MiB + j * 2 * MiB, 2 * MiB), (0, datas[j]), "connection %d reads %d's data" % (i, j))
    c.close()
check(file_bytes(path, 8 * MiB, 8 * MiB) == b"".join(datas), "the file holds all four")
EOF

nbd_done
