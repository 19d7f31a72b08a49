#!/bin/bash
# TCP listeners: tcp:HOST:PORT and tcp:PORT (which binds 127.0.0.1 only).
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo nbdcopy

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkimage "$T/disk.img" 8
p1=$(free_port); p2=$(free_port)
bdf_start --device "disk=$T/disk.img" --nbd-listen "tcp:127.0.0.1:$p1" --nbd-listen "tcp:$p2"

for p in $p1 $p2; do
	for _ in $(seq 50); do nbdinfo --size "nbd://127.0.0.1:$p/disk" >/dev/null 2>&1 && break; sleep 0.1; done
	[ "$(nbdinfo --size "nbd://127.0.0.1:$p/disk")" = $((8 << 20)) ] || fail "nbdinfo over tcp port $p"
done
nbdcopy "nbd://127.0.0.1:$p1/disk" "$T/out.img"
cmp "$T/disk.img" "$T/out.img" || fail "nbdcopy over TCP"

# tcp:PORT listens on loopback only
if command -v ss >/dev/null; then
	ss -ltn "sport = :$p2" | grep -q "127.0.0.1:$p2" || fail "tcp:$p2 is not bound to 127.0.0.1: $(ss -ltn)"
	ss -ltn "sport = :$p2" | grep -q "0.0.0.0:$p2\|\*:$p2" && fail "tcp:$p2 listens beyond loopback"
fi
bdf_stop
