#!/bin/bash
# Limits: bad values of --max-connections, --max-inflight and
# --max-inflight-per-conn (zero, negative, garbage, too small, too large, a
# share over the total) stop bdfilterd before it listens: exit 1 and one line
# on stderr that names the option. Good values start it.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/nbdtest.sh"
mkimage "$DISK" 1

# bad OPTION-NAME-IN-MESSAGE ARGS...
bad() {
	want=$1; shift
	rc=0
	timeout 10 "$BDFILTERD" --foreground --nbd-listen "unix:$SOCK" --control none \
		--device "disk=$DISK" "$@" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" -eq 1 ] || fail "'$*': exit $rc, expected 1"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "'$*': expected one line on stderr, got: $(cat "$T/err")"
	grep -q -- "$want" "$T/err" || fail "'$*': the message does not name $want: $(cat "$T/err")"
	[ ! -e "$SOCK" ] || fail "'$*': the socket was made"
	note "$* -> $(cat "$T/err")"
}

for v in 0 -1 abc 65537 1e3 "" " 5" 4294967297; do
	bad --max-connections --max-connections "$v"
done
for opt in --max-inflight --max-inflight-per-conn; do
	for v in 0 -1 -32M abc 1X 32MB 31M 33554431 2T 16777216T 18446744073709551616 ""; do
		bad "$opt" "$opt" "$v"
	done
done
bad --max-inflight-per-conn --max-inflight 64M --max-inflight-per-conn 65M
# the default total (512M) is under this share
bad --max-inflight-per-conn --max-inflight-per-conn 1G

nbd_start --max-connections 1 --max-inflight 33554432 --max-inflight-per-conn 32M
bdf_alive
"$PY" "$BDF_SRCDIR/tests/functional/nbdraw.py" check "$SOCK" disk "$DISK" ||
	fail "a client failed with the smallest limits"
bdf_stop
nbd_start --max-connections 65536 --max-inflight 1T --max-inflight-per-conn 1t
nbd_done
