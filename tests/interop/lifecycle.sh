#!/bin/bash
# Daemon life cycle: --pidfile in the foreground; daemonized mode (no --foreground):
# the parent returns 0 once the socket listens, the pidfile holds the child's pid,
# the child has let go of the terminal's stdio, SIGTERM stops it and it cleans up.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo

mkimage "$T/disk.img" 8

# --- foreground with --pidfile
bdf_start --device "disk=$T/disk.img" --pidfile "$T/fg.pid"
[ -s "$T/fg.pid" ] || fail "no pidfile in the foreground"
[ "$(cat "$T/fg.pid")" = "$BDF_PID" ] || fail "foreground pidfile holds $(cat "$T/fg.pid"), daemon is $BDF_PID"
[ "$(nbdinfo --size "$(uri disk)")" = $((8 << 20)) ] || fail "foreground daemon serves"
bdf_stop
[ -e "$T/fg.pid" ] && fail "pidfile left behind after SIGTERM (foreground)"
[ -e "$SOCK" ] && fail "socket left behind after SIGTERM (foreground)"
[ -e "$CTL" ] && fail "control socket left behind after SIGTERM (foreground)"
grep -q "stopped" "$BDF_LOG" || fail "no clean stop in the log"

# --- daemonized: run the parent in the background so that its pid is known,
# with stdout/stderr to a pipe that must reach EOF when the parent is done
"$BDFILTERD" --nbd-listen "unix:$SOCK" --control "$CTL" --device "disk=$T/disk.img" --pidfile "$T/pid" \
	> >(cat >"$T/daemon.out") 2>&1 </dev/null &
parent=$!
rc=0; timeout 20 tail --pid="$parent" -f /dev/null || fail "the parent did not return"
wait "$parent" || rc=$?
[ $rc -eq 0 ] || fail "daemonizing parent exited with $rc: $(cat "$T/daemon.out")"
# the socket listens and the pidfile is there as soon as the parent returns
[ -S "$SOCK" ] || fail "socket not ready when the parent returned"
[ -s "$T/pid" ] || fail "no pidfile when the parent returned"
pid=$(cat "$T/pid")
BDF_PID=$pid   # so that lib.sh's clean-up stops it if a check fails
[ "$pid" != "$parent" ] || fail "the pidfile holds the parent's pid"
kill -0 "$pid" 2>/dev/null || fail "pidfile pid $pid is not running"
[ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$BDFILTERD")" ] || fail "pid $pid is not bdfilterd: $(readlink "/proc/$pid/exe")"
# a daemon: not in our session, stdio not ours
[ "$(ps -o sid= -p "$pid" | tr -d ' ')" != "$(ps -o sid= -p $$ | tr -d ' ')" ] || fail "the daemon is still in the caller's session"
for fd in 0 1 2; do
	l=$(readlink "/proc/$pid/fd/$fd" 2>/dev/null || echo closed)
	case "$l" in /dev/null|closed) ;; *) fail "the daemon's fd $fd is still $l" ;; esac
done
[ "$(nbdinfo --size "$(uri disk)")" = $((8 << 20)) ] || fail "the daemon serves"
[ "$(nbdinfo --size "$(uri "")")" = $((8 << 20)) ] || fail "the daemon serves the default export"
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "the daemon did not stop on SIGTERM"
BDF_PID=
[ -e "$T/pid" ] && fail "pidfile left behind (daemonized)"
[ -e "$SOCK" ] && fail "socket left behind (daemonized)"
[ -e "$CTL" ] && fail "control socket left behind (daemonized)"

# --- daemonized and failing: the parent reports it, nothing is left running
rc=0; "$BDFILTERD" --nbd-listen "unix:$SOCK" --control "$CTL" --device "disk=$T/missing.img" --pidfile "$T/pid" \
	2>"$T/err" </dev/null || rc=$?
[ $rc -ne 0 ] || fail "daemonized start with a missing file returned 0"
[ -e "$T/pid" ] && fail "pidfile after a failed start"
[ -e "$SOCK" ] && fail "socket after a failed start"
# a listener that cannot be made after another one was: nothing is left
rc=0; "$BDFILTERD" --nbd-listen "unix:$SOCK" --nbd-listen "unix:$T/nodir/x.sock" --control "$CTL" \
	--device "disk=$T/disk.img" --pidfile "$T/pid" 2>"$T/err" </dev/null || rc=$?
[ $rc -ne 0 ] || fail "daemonized start with a bad second listener returned 0"
[ -e "$SOCK" ] && fail "first socket left behind after a failed start"

# --- SIGINT stops a foreground daemon with exit 0 as well
bdf_start --device "disk=$T/disk.img"
nbdinfo --size "$(uri disk)" >/dev/null || fail "serves before SIGINT"
kill -INT "$BDF_PID"
rc=0; wait "$BDF_PID" || rc=$?
BDF_PID=
[ $rc -eq 0 ] || fail "SIGINT: exit $rc"
[ -e "$SOCK" ] && fail "socket left behind after SIGINT"
exit 0
