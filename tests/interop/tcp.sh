#!/bin/bash
# TCP listeners: tcp:HOST:PORT, and tcp:PORT / tcp::PORT, which bind 127.0.0.1 only;
# next to the Unix listener of bdf_start.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo nbdcopy

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkimage "$T/disk.img" 8
mkimage "$T/src.img" 8
p1=$(free_port); p2=$(free_port); p3=$(free_port)
bdf_start --device "disk=$T/disk.img" --device "two=$T/src.img,ro" \
	--nbd-listen "tcp:127.0.0.1:$p1" --nbd-listen "tcp:$p2" --nbd-listen "tcp::$p3"

for p in $p1 $p2 $p3; do
	for _ in $(seq 50); do nbdinfo --size "nbd://127.0.0.1:$p/disk" >/dev/null 2>&1 && break; sleep 0.1; done
	[ "$(nbdinfo --size "nbd://127.0.0.1:$p/disk")" = $((8 << 20)) ] || fail "nbdinfo over tcp port $p"
	[ "$(nbdinfo --size "nbd://localhost:$p")" = $((8 << 20)) ] || fail "nbdinfo of the default export over tcp port $p"
done
nbdinfo --list --json "nbd://127.0.0.1:$p2" | grep -q '"export-name": "two"' || fail "nbdinfo --list over TCP"
[ "$(nbdinfo --size "$(uri disk)")" = $((8 << 20)) ] || fail "the Unix listener next to TCP ones"

nbdcopy --connections=4 --requests=64 "nbd://127.0.0.1:$p1/disk" "$T/out.img" || fail "nbdcopy from TCP"
cmp "$T/disk.img" "$T/out.img" || fail "nbdcopy over TCP differs"
nbdcopy --connections=4 --requests=64 "nbd://127.0.0.1:$p3/two" "nbd://127.0.0.1:$p2/disk" || fail "nbdcopy TCP -> TCP"

# tcp:PORT and tcp::PORT listen on loopback only
if command -v ss >/dev/null; then
	for p in $p2 $p3; do
		l=$(ss -Hltn "sport = :$p")
		grep -q "127.0.0.1:$p " <<<"$l" || fail "tcp:$p is not bound to 127.0.0.1: $l"
		[ "$(wc -l <<<"$l")" -eq 1 ] || fail "tcp:$p listens on more than loopback: $l"
	done
else
	note "ss not installed: the loopback-only check is skipped"
fi
bdf_stop
cmp "$T/src.img" "$T/disk.img" || fail "backing file after the TCP -> TCP copy"
