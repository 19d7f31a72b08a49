#!/bin/bash
# One store, one device: a second device on the same file (by any name: the
# path, a symlink, a hard link, a loop device on it) or on the same block
# device is refused with EBUSY, at start and live, read-only or not; a device
# re-added after its
# removal is fine. A removed device is out of service at once: an NBD client
# still connected gets errors for every request, and the store is never
# touched again.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-io

mkimage "$T/a.img" 4
mkimage "$T/b.img" 4
ln -s "$T/a.img" "$T/link.img"
ln "$T/a.img" "$T/hard.img"

# at start: one line, exit 1, nothing listens
rc=0; timeout 10 "$BDFILTERD" --foreground --nbd-listen "unix:$SOCK" --control none \
	--device "a=$T/a.img" --device "x=$T/link.img,ro" >"$T/out" 2>&1 || rc=$?
[ $rc -eq 1 ] || fail "two devices on one file at start: exit $rc"
grep -q "is the store of device a already" "$T/out" || fail "at start: $(cat "$T/out")"
[ "$(wc -l <"$T/out")" -eq 1 ] || fail "at start, more than one line: $(cat "$T/out")"
[ ! -S "$SOCK" ] || fail "something listened"

bdf_start --device "a=$T/a.img" --device "b=$T/b.img"
for p in "$T/a.img" "$T/link.img" "$T/hard.img" "$T/../$(basename "$T")/a.img"; do
	expect EBUSY device_add -d x -f "$p"
	expect EBUSY device_add -d x -f "$p" --ro
	grep -q "is the store of device a already" "$T/err" || fail "the message does not name a: $(cat "$T/err")"
done
[ "$(B device_list --json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["devices"]))')" = 2 ] ||
	fail "a refused device_add left a device behind"

# a block device: the same loop device twice; a loop device on a device's file
mkimage "$T/c.img" 4
if command -v losetup >/dev/null && loop=$(losetup -f --show "$T/c.img" 2>/dev/null); then
	trap 'rc=$?; losetup -d "$loop" ${loop2:-} 2>/dev/null; (exit $rc); _bdf_cleanup' EXIT
	B device_add -d l1 -f "$loop" >/dev/null
	expect EBUSY device_add -d l2 -f "$loop"
	expect EBUSY device_add -d l2 -f "$T/c.img"          # the loop's backing file
	loop2=$(losetup -f --show "$T/a.img")
	expect EBUSY device_add -d l2 -f "$loop2"            # a loop device on a's file
	grep -q "is the store of device a already" "$T/err" || fail "loop on a's file: $(cat "$T/err")"
	B device_remove -d l1
	losetup -d "$loop" "$loop2"
	trap _bdf_cleanup EXIT
else
	note "no loop device: block-device identity not checked"
fi

# removed, then re-added on the same store: fine
B device_remove -d b
B device_add -d b2 -f "$T/b.img" >/dev/null
B device_remove -d b2

# a client connected when its device is removed: every request fails, the
# store stays as it was, the daemon goes on
cp "$T/a.img" "$T/a.before"
export URI_A="$(uri a)" BDFILTER
$PY - <<'EOF' || fail "a client of a removed device"
import os, subprocess, nbd
h = nbd.NBD()
h.connect_uri(os.environ["URI_A"])
h.pwrite(b"\x5a" * 4096, 0)      # served while the device is there
h.flush()
subprocess.run([os.environ["BDFILTER"], "device_remove", "-d", "a"], check=True)
for what, fn in [("write", lambda: h.pwrite(b"\xa5" * 4096, 8192)),
                 ("read", lambda: h.pread(4096, 0)),
                 ("zero", lambda: h.zero(4096, 16384)),
                 ("trim", lambda: h.trim(4096, 20480)),
                 ("flush", lambda: h.flush())]:
    try:
        fn()
    except nbd.Error as e:
        continue
    raise AssertionError("%s on a removed device succeeded" % what)
h.shutdown()
EOF
$PY - "$T/a.before" "$T/a.img" <<'EOF' || fail "the store of a removed device changed"
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
assert b[:4096] == b"\x5a" * 4096, "the write made before the removal is missing"
assert a[4096:] == b[4096:], "the store changed after the removal"
EOF
bdf_alive
B device_add -d a -f "$T/a.img" >/dev/null
io a "read -P 0x5a 0 4096"
bdf_stop
