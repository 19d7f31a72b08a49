# Helpers for the raw NBD tests (nbd-*.sh), sourced after lib.sh.
#
# A test starts the daemon with two exports, `disk` (16 MiB of random data,
# read-write) and `ro` (16 MiB, read-only), feeds it bad input with a Python body
# that uses nbdraw.py, and ends with nbd_done: the daemon is alive, a
# well-behaved client still reads the right data, and SIGTERM stops it cleanly.
#
# Python bodies run as `$PY - <<'EOF' || fail "..."` and see the environment
# variables SOCK, DISK, RO and BDF_PID.

DISK="$T/disk.img"
RO="$T/ro.img"
export PYTHONPATH="$BDF_SRCDIR/tests/functional${PYTHONPATH:+:$PYTHONPATH}"

# nbd_start [ARGS...]: start bdfilterd serving disk and ro (images made if absent).
nbd_start() {
	[ -f "$DISK" ] || mkimage "$DISK" 16
	[ -f "$RO" ] || mkimage "$RO" 16
	bdf_start --device "disk=$DISK" --device "ro=$RO,ro" "$@"
	export SOCK DISK RO BDF_PID
}

# nbd_done: after the bad input, the daemon lives and serves a well-behaved
# client (nbdinfo, and a raw GO + READ compared with the file in every reply
# mode); then it must stop with exit 0.
nbd_done() {
	bdf_alive
	if command -v nbdinfo >/dev/null 2>&1; then
		nbdinfo "$(uri disk)" >"$T/nbdinfo.out" 2>&1 || { cat "$T/nbdinfo.out" >&2; fail "nbdinfo failed after the bad input"; }
	fi
	"$PY" "$BDF_SRCDIR/tests/functional/nbdraw.py" check "$SOCK" disk "$DISK" ||
		fail "a well-behaved client failed after the bad input"
	bdf_alive
	bdf_stop
	note "ok"
}
