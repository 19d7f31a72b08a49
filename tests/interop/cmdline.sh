#!/bin/bash
# Bad command lines: each gives a non-zero exit, exactly one line on stderr, and
# creates no socket, control socket or pidfile. --help and --version work.
. "$BDF_SRCDIR/tests/functional/lib.sh"

mkimage "$T/disk.img" 1
head -c 100 /dev/zero >"$T/tiny.img"
head -c 511 /dev/zero >"$T/small.img"
echo "not a socket" >"$T/regular"
long="$T/$(printf 'a%.0s' $(seq 120))"

# bad ARGS...: run in the foreground and daemonizing; both must fail cleanly.
# Every problem is collected, so that one run reports all of them.
n=0
problems=()
problem() { problems+=("$*"); echo "PROBLEM: $*" >&2; }
bad() {
	for mode in foreground daemon; do
		fg=--foreground; [ $mode = daemon ] && fg=
		rm -f "$SOCK" "$CTL" "$T/pid"
		rc=0
		timeout 10 "$BDFILTERD" $fg --nbd-listen "unix:$SOCK" --control "$CTL" --pidfile "$T/pid" "$@" \
			>"$T/out" 2>"$T/err" </dev/null || rc=$?
		if [ $rc -eq 0 ]; then
			[ -s "$T/pid" ] && kill "$(cat "$T/pid")" 2>/dev/null
			problem "accepted ($mode): $*"
			continue
		fi
		[ $rc -ne 124 ] || problem "hung ($mode): $*"
		[ "$(wc -l <"$T/err")" -eq 1 ] || problem "expected one line on stderr ($mode) for '$*', got: [$(cat "$T/err")] rc=$rc"
		[ -s "$T/out" ] && problem "stdout not empty ($mode) for '$*': $(cat "$T/out")"
		[ -e "$SOCK" ] && problem "socket created ($mode) for: $*"
		[ -e "$CTL" ] && problem "control socket created ($mode) for: $*"
		[ -e "$T/pid" ] && problem "pidfile created ($mode) for: $*"
	done
	n=$((n + 1))
	note "$* -> $(cat "$T/err")"
}
D="disk=$T/disk.img"
# options
bad --bogus --device "$D"
bad -Z --device "$D"
bad --device
bad --device "$D" --threads
bad --device "$D" extra-argument
bad --device "$D" --threads 0
bad --device "$D" --threads many
bad --device "$D" --threads 99999999999999999999
bad --device "$D" --log-level loud
bad --device "$D" --handshake-timeout -1
bad --device "$D" --handshake-timeout soon
# devices
bad --device "disk=$T/missing.img"
bad --device "$D" --device "$D"
bad --device "$D" --device "disk=$T/tiny.img"
bad --device "disk=$T/tiny.img"
bad --device "disk=$T/small.img"
bad --device "disk=$T"
bad --device "$T/disk.img"
bad --device "=$T/disk.img"
bad --device "disk="
bad --device "$D,filter=nope"
bad --device "$D,bogus"
bad --control none
# listen addresses
bad --device "$D" --nbd-listen unix:
bad --device "$D" --nbd-listen "unix:$long"
bad --device "$D" --nbd-listen "unix:$T/nodir/x.sock"
bad --device "$D" --nbd-listen "unix:$T/regular"
bad --device "$D" --nbd-listen tcp:
bad --device "$D" --nbd-listen tcp:host:notaport
bad --device "$D" --nbd-listen tcp:localhost:notaport
bad --device "$D" --nbd-listen tcp:127.0.0.1:0
bad --device "$D" --nbd-listen tcp:127.0.0.1:65536
bad --device "$D" --nbd-listen tcp:127.0.0.1:
bad --device "$D" --nbd-listen "tcp:[::1:80"
bad --device "$D" --nbd-listen foo:x
bad --device "$D" --nbd-listen "$T/plain-path.sock"
bad --device "$D" --nbd-listen ""
# other paths
# (the daemon makes one missing parent directory of the control socket, as for /run/bdfilter)
bad --device "$D" --control "$T/nodir/sub/control.sock"
bad --device "$D" --pidfile "$T/nodir/pid"
note "$n bad command lines tried"
[ ${#problems[@]} -eq 0 ] || fail "${#problems[@]} problems with bad command lines:$(printf '\n  %s' "${problems[@]}")"
[ "$(cat "$T/regular")" = "not a socket" ] || fail "a regular file in the way of the socket was changed"

# --help and --version: exit 0, on stdout
"$BDFILTERD" --help >"$T/out" 2>"$T/err" || fail "--help exit status"
grep -q -- "--nbd-listen" "$T/out" && grep -q -- "--device" "$T/out" || fail "--help: $(cat "$T/out")"
[ -s "$T/err" ] && fail "--help wrote to stderr"
"$BDFILTERD" --version >"$T/out" || fail "--version exit status"
grep -q "^bdfilterd [0-9]" "$T/out" || fail "--version: $(cat "$T/out")"
[ -e "$SOCK" ] && fail "--help/--version created a socket"
exit 0
