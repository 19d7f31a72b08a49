#!/bin/bash
# Daemon life cycle: bad command lines, pidfile, daemonizing, SIGTERM under load.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo

mkimage "$T/disk.img" 64
head -c 100 /dev/zero >"$T/tiny.img"

# Each bad command line: non-zero exit, one line on stderr, no socket.
bad() {
	rc=0
	"$BDFILTERD" --foreground --nbd-listen "unix:$SOCK" --control "$CTL" "$@" >"$T/out" 2>"$T/err" </dev/null || rc=$?
	[ $rc -ne 0 ] || fail "accepted: $*"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "expected one line on stderr for '$*', got: $(cat "$T/err")"
	[ -e "$SOCK" ] && fail "socket created for: $*"
	note "$* -> $(cat "$T/err")"
}
bad --bogus --device "disk=$T/disk.img"
bad --device "disk=$T/missing.img"
bad --device "disk=$T/disk.img" --device "disk=$T/disk.img"
bad --device "disk=$T/tiny.img"
bad --device "disk=$T/disk.img" --nbd-listen unix:
bad --device "disk=$T/disk.img" --nbd-listen tcp:localhost:notaport
bad --device "disk=$T/disk.img" --nbd-listen foo:x
bad --device "disk=$T/disk.img,filter=nope"
bad --device "disk=$T/disk.img" --threads 0
bad --device "disk=$T/disk.img" --log-level loud
bad --device "disk=$T"
bad --control none
bad --device "disk=$T/disk.img" --param bogus=1
bad --device "disk=$T/disk.img" --param chunk_minimum_shift=abc
bad --device "disk=$T/disk.img" --param diff_storage_minimum
bad --device "disk=$T/disk.img" --control /nonexistent/dir/control.sock

# --help and --version
"$BDFILTERD" --help | grep -q -- "--nbd-listen" || fail "--help"
"$BDFILTERD" --version | grep -q "^bdfilterd " || fail "--version"

# Daemonized: the parent returns once the socket listens; the pidfile has the child.
"$BDFILTERD" --nbd-listen "unix:$SOCK" --control "$CTL" --device "disk=$T/disk.img" --pidfile "$T/pid" || fail "daemonize"
[ -S "$SOCK" ] || fail "socket not ready when the parent returned"
pid=$(cat "$T/pid")
kill -0 "$pid" || fail "pidfile pid $pid is not running"
[ "$(nbdinfo --size "$(uri disk)")" = $((64 << 20)) ] || fail "daemon serves"
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "daemon did not stop on SIGTERM"
[ -e "$T/pid" ] && fail "pidfile left behind"
[ -e "$SOCK" ] && fail "socket left behind"

# SIGTERM while a client writes: exit 0, and every acknowledged write is in the file.
need nbdsh
bdf_start --device "disk=$T/disk.img" --pidfile "$T/pid2"
[ "$(cat "$T/pid2")" = "$BDF_PID" ] || fail "pidfile in the foreground"
/usr/bin/nbdsh -u "$(uri disk)" -c '
import sys
for i in range(64):
    try:
        h.pwrite(bytes([i + 1]) * (1 << 20), i << 20)
    except Exception:
        break
    print(i, flush=True)
' >"$T/acked" 2>/dev/null &
writer=$!
for _ in $(seq 100); do [ "$(wc -l <"$T/acked")" -ge 4 ] && break; sleep 0.02; done
bdf_stop
wait $writer || true
n=$(wc -l <"$T/acked")
note "$n writes acknowledged before SIGTERM took effect"
[ "$n" -ge 4 ] || fail "the writer did not get going"
$PY - "$T/disk.img" "$T/acked" <<'PY' || fail "an acknowledged write is missing from the file"
import sys
acked = [int(l) for l in open(sys.argv[2]) if l.strip()]
with open(sys.argv[1], "rb") as f:
    for i in acked:
        f.seek(i << 20)
        assert f.read(1 << 20) == bytes([i + 1]) * (1 << 20), "block %d" % i
PY
[ -e "$T/pid2" ] && fail "pidfile left behind after SIGTERM"
grep -q "stopped" "$BDF_LOG" || fail "no clean stop in the log"
