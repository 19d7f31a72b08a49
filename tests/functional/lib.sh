# Shared helpers for functional tests (sourced, POSIX sh + bash features used by callers).
# A test exits 0 on pass, 77 to skip, anything else on failure.
#
# Environment set by meson: BDFILTERD (path to the daemon), BDF_SRCDIR (source root).

set -eu

: "${BDFILTERD:?BDFILTERD must point at the bdfilterd binary}"
: "${BDF_SRCDIR:?BDF_SRCDIR must point at the source tree}"

# Debian's Python modules (nbd) live with /usr/bin/python3, not with a python3 earlier on PATH.
PY=/usr/bin/python3
export PATH="/usr/sbin:/usr/bin:$PATH"

T=$(mktemp -d "${TMPDIR:-/tmp}/bdf-test.XXXXXX")
BDF_PID=
BDF_LOG="$T/bdfilterd.log"
SOCK="$T/nbd.sock"
CTL="$T/control.sock"
export BDFILTER_CONTROL="$CTL"
: "${BDFILTER:=$(dirname "$BDFILTERD")/bdfilter}"

fail() { echo "FAIL: $*" >&2; [ -f "$BDF_LOG" ] && { echo "--- daemon log:" >&2; tail -n 40 "$BDF_LOG" >&2; }; BDF_LOG_SHOWN=1; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
need() { for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "$c not installed"; done; }
note() { echo "# $*"; }

_bdf_cleanup() {
	rc=$?
	# A command that failed under set -e, not through fail(): the log says why.
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ -z "${BDF_LOG_SHOWN:-}" ] && [ -s "$BDF_LOG" ]; then
		echo "--- exit $rc; daemon log:" >&2
		tail -n 40 "$BDF_LOG" >&2
	fi
	if [ -n "$BDF_PID" ] && kill -0 "$BDF_PID" 2>/dev/null; then
		kill -TERM "$BDF_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$BDF_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$BDF_PID" 2>/dev/null || true
	fi
	rm -rf "$T"
	exit $rc
}
trap _bdf_cleanup EXIT
trap 'exit 1' INT TERM

# wait_for_socket PATH [SECONDS]
wait_for_socket() {
	_n=$(( ${2:-10} * 20 ))
	while [ $_n -gt 0 ]; do
		[ -S "$1" ] && return 0
		if [ -n "$BDF_PID" ] && ! kill -0 "$BDF_PID" 2>/dev/null; then fail "daemon exited before $1 appeared"; fi
		sleep 0.05; _n=$((_n - 1))
	done
	fail "socket $1 did not appear"
}

# bdf_start ARGS...: start bdfilterd in the foreground listening on $SOCK, plus ARGS.
bdf_start() {
	"$BDFILTERD" --foreground --nbd-listen "unix:$SOCK" --control "$CTL" "$@" >"$BDF_LOG" 2>&1 &
	BDF_PID=$!
	wait_for_socket "$SOCK"
	# (the control socket may come after the NBD one)
	wait_for_socket "$CTL"
}

# bdf_stop: SIGTERM the daemon and require a clean exit 0.
bdf_stop() {
	[ -n "$BDF_PID" ] || return 0
	kill -TERM "$BDF_PID"
	_rc=0; wait "$BDF_PID" || _rc=$?
	BDF_PID=
	[ "$_rc" -eq 0 ] || fail "bdfilterd exited with $_rc after SIGTERM"
}

# bdf_alive: the daemon is still running (checked after bad input).
bdf_alive() { [ -n "$BDF_PID" ] && kill -0 "$BDF_PID" 2>/dev/null || fail "bdfilterd died"; }

# uri EXPORT: NBD URI for an export on $SOCK.
uri() { echo "nbd+unix:///$1?socket=$SOCK"; }

# mkimage PATH SIZE_MIB: a file of random data (fully allocated).
mkimage() { head -c "$(( $2 * 1024 * 1024 ))" /dev/urandom >"$1"; }

# The CLI on the test's daemon (through BDFILTER_CONTROL, exported above).
B() { "$BDFILTER" "$@"; }
# kv KEY: the value of KEY= in the key=value lines on stdin.
kv() { sed -n "s/^$1=//p"; }
# expect ERRNO CMD...: the command fails with one line on stderr naming ERRNO.
expect() {
	want=$1; shift
	rc=0; B "$@" >"$T/out" 2>"$T/err" || rc=$?
	[ $rc -ne 0 ] || fail "'$*' succeeded, expected $want"
	grep -q ": $want: " "$T/err" || fail "'$*': expected $want, got: $(cat "$T/err")"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "'$*': more than one line on stderr: $(cat "$T/err")"
}
# io EXPORT QEMU-IO-COMMAND: run it on the export; any error or mismatch fails.
io() {
	qemu-io -f raw "$(uri "$1")" -c "$2" >"$T/io.out" 2>&1 || fail "qemu-io $1 '$2': $(cat "$T/io.out")"
	! grep -q "verification failed\|error" "$T/io.out" || fail "qemu-io $1 '$2': $(cat "$T/io.out")"
}

# The backup client beside the daemon, and the snapshot steps its tests share.
BACKUP="$(dirname "$BDFILTERD")/bdfilter-backup"
# snap DEVICE STORAGE: create, give storage and take a snapshot of DEVICE;
# prints its id.
snap() {
	_id=$(B snapshot_create -d "$1" | kv id)
	[ -n "$_id" ] || fail "snapshot_create -d $1 printed no id"
	B snapshot_appendstorage -i "$_id" -f "$2" >/dev/null || fail "snapshot_appendstorage $2"
	B snapshot_take -i "$_id" >/dev/null || fail "snapshot_take $_id"
	echo "$_id"
}
# jfield FILE KEY: a top-level field of a JSON file (null prints as None).
jfield() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
