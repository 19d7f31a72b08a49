#!/bin/bash
# SIGTERM under load: during a running nbdcopy write, with idle clients connected,
# and with a writer counting acknowledged writes. The daemon exits 0 promptly,
# every acknowledged write is in the backing file, and nothing half-written appears.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy nbdsh

# stop_daemon SIGNAL: signal the daemon, require exit 0 within 10 s
stop_daemon() {
	kill "-$1" "$BDF_PID"
	for _ in $(seq 100); do kill -0 "$BDF_PID" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$BDF_PID" 2>/dev/null && fail "bdfilterd still running 10 s after SIG$1"
	_rc=0; wait "$BDF_PID" || _rc=$?
	BDF_PID=
	[ "$_rc" -eq 0 ] || fail "bdfilterd exited with $_rc after SIG$1"
}
# blocks_ok SRC DST: every 4 KiB block of DST is either all zero (not written yet) or
# equal to SRC's; prints how many were written
blocks_ok() {
	$PY - "$1" "$2" <<'PY'
import sys
B = 4096
n = bad = 0
zero = bytes(B)
with open(sys.argv[1], "rb") as s, open(sys.argv[2], "rb") as d:
    while True:
        a, b = s.read(B), d.read(B)
        if not a:
            break
        if b == a:
            n += 1
        elif b != zero:
            bad += 1
print(n)
sys.exit(1 if bad else 0)
PY
}

# --- 1. SIGTERM in the middle of an nbdcopy write with many requests in flight
mkimage "$T/src.img" 256
truncate -s 256M "$T/disk.img"
bdf_start --device "disk=$T/disk.img"
nbdcopy --connections=4 --requests=64 --request-size=4096 "$T/src.img" "$(uri disk)" 2>"$T/nbdcopy.err" &
copier=$!
# wait until writes land in the (sparse) backing file
for _ in $(seq 1000); do [ "$(du -k "$T/disk.img" | cut -f1)" -gt 4096 ] && break; sleep 0.01; done
kill -0 $copier 2>/dev/null || note "nbdcopy finished before SIGTERM: the machine is fast; the check is weaker"
stop_daemon TERM
crc=0; wait $copier || crc=$?
written=$(blocks_ok "$T/src.img" "$T/disk.img") || fail "a block of the backing file is neither old nor new data"
note "nbdcopy exit $crc; $written of 65536 blocks written before the daemon stopped"
[ "$written" -gt 0 ] || fail "nothing was written"
[ -e "$SOCK" ] && fail "socket left behind"

# --- 2. idle clients connected (one mid-handshake, one in transmission): SIGTERM still exits 0
mkimage "$T/small.img" 4
bdf_start --device "disk=$T/small.img"
/usr/bin/nbdsh -u "$(uri disk)" -c 'import time; h.pread(512, 0); time.sleep(30)' >/dev/null 2>&1 &
idle1=$!
$PY -c 'import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(30)' "$SOCK" &
idle2=$!
sleep 0.5
stop_daemon TERM
kill $idle1 $idle2 2>/dev/null || true
wait $idle1 $idle2 2>/dev/null || true

# --- 3. every acknowledged write (FUA off, no flush) is in the file after SIGTERM
truncate -s 64M "$T/acked.img"
bdf_start --device "disk=$T/acked.img" --pidfile "$T/pid"
: >"$T/acked"
/usr/bin/nbdsh -u "$(uri disk)" -c '
for i in range(64):
    try:
        h.pwrite(bytes([i + 1]) * (1 << 20), i << 20)
    except Exception:
        break
    print(i, flush=True)
' >>"$T/acked" 2>/dev/null &
writer=$!
for _ in $(seq 1000); do [ "$(wc -l <"$T/acked")" -ge 4 ] && break; sleep 0.01; done
stop_daemon TERM
wait $writer || true
n=$(wc -l <"$T/acked")
note "$n writes acknowledged before SIGTERM took effect"
[ "$n" -ge 4 ] || fail "the writer did not get going"
$PY - "$T/acked.img" "$T/acked" <<'PY' || fail "an acknowledged write is missing from the file"
import sys
acked = [int(l) for l in open(sys.argv[2]) if l.strip()]
with open(sys.argv[1], "rb") as f:
    for i in acked:
        f.seek(i << 20)
        assert f.read(1 << 20) == bytes([i + 1]) * (1 << 20), "block %d" % i
PY
[ -e "$T/pid" ] && fail "pidfile left behind after SIGTERM"
grep -q "stopped" "$BDF_LOG" || fail "no clean stop in the log"

# --- 4. SIGINT during an nbdcopy read: exit 0 too
bdf_start --device "disk=$T/src.img,ro"
# (nbdcopy 1.14 may abort on the lost connection: its exit is not checked, and the
# subshell keeps bash's "Aborted" message out of the log)
( nbdcopy --connections=4 --requests=64 --request-size=4096 "$(uri disk)" "$T/out.img" ) >/dev/null 2>&1 &
copier=$!
sleep 0.2
stop_daemon INT
wait $copier || true
exit 0
