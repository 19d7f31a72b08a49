#!/bin/bash
# Socket activation: nbdinfo, nbdcopy and nbdsh start bdfilterd themselves with
# LISTEN_PID/LISTEN_FDS (libnbd's "[ CMD ]" syntax); no --nbd-listen.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo nbdcopy

mkimage "$T/disk.img" 4
mkimage "$T/src.img" 4
truncate -s 4M "$T/empty.img"
D=("$BDFILTERD" --control "$T/ctl.sock")

size=$(nbdinfo --size -- [ "${D[@]}" --device "disk=$T/disk.img" ] 2>"$T/err") || fail "nbdinfo with socket activation: $(cat "$T/err")"
[ "$size" = $((4 << 20)) ] || fail "size $size"
grep -q "systemd" "$T/err" || note "daemon log does not mention the passed socket: $(cat "$T/err")"
# the form without --control (default control socket) works as well
size=$(nbdinfo --size -- [ "$BDFILTERD" --device "disk=$T/disk.img" ] 2>"$T/err") || fail "nbdinfo -- [ bdfilterd --device ]: $(cat "$T/err")"
[ "$size" = $((4 << 20)) ] || fail "size $size (default control socket)"

# several devices: the list and the default export
names=$(nbdinfo --list --json -- [ "${D[@]}" --device "disk=$T/disk.img" --device "other=$T/src.img,ro" ] 2>/dev/null |
	$PY -c 'import json,sys; print(" ".join(e["export-name"] for e in json.load(sys.stdin)["exports"]))') ||
	fail "nbdinfo --list with socket activation"
[ "$names" = "disk other" ] || fail "nbdinfo --list: $names"

# nbdcopy out of and into a socket-activated daemon
nbdcopy -- [ "${D[@]}" --device "disk=$T/disk.img" ] "$T/out.img" 2>"$T/err" || fail "nbdcopy out of socket activation: $(cat "$T/err")"
cmp "$T/disk.img" "$T/out.img" || fail "copy out differs"
nbdcopy --flush "$T/src.img" -- [ "${D[@]}" --device "empty=$T/empty.img" ] 2>"$T/err" || fail "nbdcopy into socket activation: $(cat "$T/err")"
cmp "$T/src.img" "$T/empty.img" || fail "copy in: backing file differs"

# the daemon is gone when the client is done (libnbd SIGTERMs it at close)
sleep 0.2
pgrep -f "$T/empty.img" >/dev/null && fail "a socket-activated daemon outlived its client"

# no --nbd-listen and no LISTEN_FDS: a clear error, non-zero
rc=0; "${D[@]}" --device "disk=$T/disk.img" 2>"$T/err" </dev/null || rc=$?
[ $rc -ne 0 ] || fail "started with nothing to listen on"
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "no listener: expected one line on stderr: $(cat "$T/err")"
note "no listener -> $(cat "$T/err")"
# LISTEN_PID for another process: the fds are not ours
rc=0; LISTEN_PID=1 LISTEN_FDS=1 "${D[@]}" --device "disk=$T/disk.img" 2>"$T/err" </dev/null 3</dev/null || rc=$?
[ $rc -ne 0 ] || fail "served fds meant for another pid"
