#!/bin/bash
# Who may use the control socket: root, bdfilterd's own user, and with
# --control-group a member of that group (primary or supplementary). The file
# mode refuses the others first (0600, or 0660 of the group); with the mode
# loosened by hand, the daemon's own peer check refuses them alone: one
# EACCES line, nothing run, one log line with uid, gid and pid, at most one
# line per 10 s under a flood. Numeric gids only: nothing on the machine changes.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need setpriv
[ "$(id -u)" = 0 ] || skip "needs root (setpriv to other users)"

G=4242      # the control group: no /etc/group entry needed
OTHER=4243
# as_user ARGS...: the CLI as uid 65534 with the setpriv group options ARGS
# up to "--", e.g. as_user --groups=$G -- version
as_user() {
	_opts=()
	while [ "$1" != -- ]; do _opts+=("$1"); shift; done
	shift
	${_EXEC:-} setpriv --reuid=65534 "${_opts[@]}" "$BDFILTER" "$@"
}
nobody() { as_user --regid=65534 --clear-groups -- "$@"; }
# refused_by_daemon CMD...: run CMD (as_user, nobody or a setpriv line) in the
# background, the shell that runs it exec'ing setpriv, which execs the CLI: $p
# is the CLI's pid. One EACCES line, and the log names $p.
refused_by_daemon() {
	rc=0
	_EXEC=exec "$@" >"$T/out" 2>"$T/err" &
	p=$!
	wait $p || rc=$?
	[ $rc -ne 0 ] || fail "$* was let in"
	grep -q ": EACCES: permission denied" "$T/err" || fail "$*: $(cat "$T/err")"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "$*: more than one line: $(cat "$T/err")"
}
refusals() { grep -c "control: .*refused" "$BDF_LOG" || true; }

# The non-root clients must reach the sockets in $T.
chmod 755 "$T"
mkimage "$T/a.img" 4
mkimage "$T/b.img" 1

# --- no --control-group: root only, the file 0600 root
bdf_start --device "a=$T/a.img"
[ "$(stat -c %a:%u "$CTL")" = 600:0 ] || fail "control socket $(stat -c %a:%u "$CTL"), expected 600:0"
rc=0; nobody version 2>"$T/err" || rc=$?
[ $rc -eq 1 ] && grep -q "Permission denied (root may use it" "$T/err" || fail "0600 socket: rc=$rc $(cat "$T/err")"
[ "$(refusals)" = 0 ] || fail "the kernel refused that one, not the daemon"

# The mode loosened: the daemon's check holds alone, and nothing the peer sent runs.
chmod 666 "$CTL"
refused_by_daemon nobody device_add -d evil -f "$T/b.img"
grep -q "control: connection from uid 65534 gid 65534 pid $p refused" "$BDF_LOG" ||
	fail "no log line with uid, gid and pid $p"
B device_list | grep -q '^name=evil$' && fail "a refused peer's device_add ran"
B version >/dev/null || fail "root refused"
bdf_alive

# A flood: each gets its EACCES line; the log holds it to one line per 10 s.
setpriv --reuid=65534 --regid=65534 --clear-groups $PY - "$CTL" <<'EOF' || fail "flood of refused peers"
import json, socket, sys
for i in range(100):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sys.argv[1])
    try:
        s.sendall(b'{"command": "version"}\n')
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed already: its answer is waiting all the same
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, "closed without an answer"
        buf += chunk
    r = json.loads(buf.split(b"\n")[0])
    assert r["ok"] is False and r["errno"] == "EACCES" and r["code"] == 13, r
    s.close()
EOF
[ "$(refusals)" = 1 ] || fail "$(refusals) log lines for 101 refused peers within 10 s"
bdf_alive
sleep 10.5
refused_by_daemon nobody version
grep -q "control: 101 connections refused since the last message, the latest from uid 65534 gid 65534 pid $p" \
	"$BDF_LOG" || fail "no count line after 10 s"
[ "$(refusals)" = 2 ] || fail "$(refusals) log lines, expected 2"
B version >/dev/null || fail "root refused after the flood"
bdf_stop

# --- --control-group G: 0660 root:G, members by either kind of group
bdf_start --device "a=$T/a.img" --control-group $G
[ "$(stat -c %a:%u:%g "$CTL")" = "660:0:$G" ] || fail "control socket $(stat -c %a:%u:%g "$CTL"), expected 660:0:$G"
as_user --regid=65534 --groups=$G -- version >/dev/null || fail "a supplementary member refused"
as_user --regid=$G --clear-groups -- version >/dev/null || fail "a primary member refused"
# more groups than the first SO_PEERGROUPS buffer holds, G the last of them
as_user --regid=65534 --groups="$(seq -s, 5000 5099),$G" -- version >/dev/null ||
	fail "a member with 101 groups refused"
as_user --regid=65534 --groups=$G -- device_add -d b -f "$T/a.img" 2>&1 | grep -q EBUSY ||
	fail "a member's command did not run"
rc=0; as_user --regid=65534 --groups=$OTHER -- version 2>"$T/err" || rc=$?
[ $rc -eq 1 ] && grep -q "Permission denied" "$T/err" || fail "0660 socket, other group: rc=$rc $(cat "$T/err")"
chmod 666 "$CTL"
refused_by_daemon as_user --regid=65534 --groups=$OTHER,65533 -- version
grep -q "for root and group $G only" "$T/err" || fail "the refusal does not name the group: $(cat "$T/err")"
grep -q "control: connection from uid 65534 gid 65534 pid $p refused: not root, not in the control group" \
	"$BDF_LOG" || fail "no log line for pid $p"
B version >/dev/null || fail "root refused with a control group"
bdf_alive
bdf_stop

# --- a bad group is an option error, before anything listens
for g in no-such-group-bdf 4294967295 ""; do
	rc=0; "$BDFILTERD" --foreground --control "$CTL" --control-group "$g" --device "a=$T/a.img" 2>"$T/err" || rc=$?
	[ $rc -eq 1 ] && grep -q -- "--control-group" "$T/err" || fail "--control-group '$g': rc=$rc $(cat "$T/err")"
	[ ! -e "$CTL" ] || fail "--control-group '$g': the socket was made"
done
grep -q "no such group" <("$BDFILTERD" --control-group no-such-group-bdf --device "a=$T/a.img" 2>&1) ||
	fail "an unknown group name not said"

# --- a daemon not run as root: its own user may use it, others not
mkdir "$T/own" && chown 65534:65534 "$T/own" "$T/a.img"
setpriv --reuid=65534 --regid=65534 --clear-groups "$BDFILTERD" --foreground --control "$T/own/c.sock" \
	--nbd-listen "unix:$T/own/nbd.sock" --device "a=$T/a.img" >"$BDF_LOG" 2>&1 &
BDF_PID=$!
wait_for_socket "$T/own/c.sock"
[ "$(stat -c %a:%u "$T/own/c.sock")" = 600:65534 ] || fail "own socket $(stat -c %a:%u "$T/own/c.sock")"
BDFILTER_CONTROL="$T/own/c.sock" nobody version >/dev/null || fail "the daemon's own user refused"
BDFILTER_CONTROL="$T/own/c.sock" B version >/dev/null || fail "root refused by a non-root daemon"
chmod 666 "$T/own/c.sock"
BDFILTER_CONTROL="$T/own/c.sock" refused_by_daemon setpriv --reuid=65533 --regid=65533 --clear-groups "$BDFILTER" version
grep -q "for root, uid 65534 only" "$T/err" || fail "the refusal does not name the daemon's user: $(cat "$T/err")"
grep -q "uid 65533 gid 65533 pid $p refused: not root, not bdfilterd's user" "$BDF_LOG" ||
	fail "no log line for uid 65533"
bdf_stop
