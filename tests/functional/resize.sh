#!/bin/bash
# device_resize: a file-backed device grown behind the daemon's back and re-read,
# shrunk and grown with -s; the CBT map corrupted at once and reset for the new
# capacity (new generation, blksnap's block-size formula) at the next take; new
# NBD connections see the new size, a connection made before a shrink gets errors
# (not a crash, nor a file grown again) past the new end; EBUSY in a snapshot,
# EINVAL, EPERM and ENODEV; I/O running through repeated resizes.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-io nbdinfo
$PY -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"
filesize() { stat -c %s "$1"; }
nbdsize() { nbdinfo --size "$(uri "$1")" || fail "nbdinfo --size $1"; }
# blksnap's CBT geometry: 64 KiB blocks, doubled while there are more than 2^21.
geometry() { $PY -c '
import sys
cap, s = int(sys.argv[1]), 16
n = lambda s: (cap + (1 << s) - 1) >> s
while n(s) > 2097152 and s < 26:
    s += 1
print(1 << s, n(s))' "$1"; }
# cbt_is CAP CORRUPTED: what cbtinfo -d a says of the map
cbt_is() {
	info=$(B cbtinfo -d a)
	[ "$(kv device_capacity <<<"$info")" = "$1" ] && [ "$(kv corrupted <<<"$info")" = "$2" ] ||
		fail "cbtinfo: want capacity $1, corrupted=$2; got: $(tr '\n' ' ' <<<"$info")"
}
gen() { B cbtinfo -d a | kv generation_id; }
# take_checked CAP: a take resets a corrupted map for CAP: a new generation, the
# block size and count of the formula, a map of that many bytes.
take() {
	id=$(B snapshot_create -d a | kv id)
	B snapshot_appendstorage -i "$id" -f "$T/diff.img" >/dev/null
	B snapshot_take -i "$id" >/dev/null
	B snapshot_destroy -i "$id"
}
take_checked() {
	before=$(gen)
	take
	info=$(B cbtinfo -d a)
	read -r bsize bcount <<<"$(geometry "$1")"
	[ "$(kv corrupted <<<"$info")" = false ] || fail "still corrupted after the take: $info"
	[ "$(kv generation_id <<<"$info")" != "$before" ] || fail "no new generation after a resize and a take"
	[ "$(kv device_capacity <<<"$info")" = "$1" ] || fail "capacity after the take: $info"
	[ "$(kv block_size <<<"$info")" = "$bsize" ] || fail "block_size: want $bsize: $info"
	[ "$(kv block_count <<<"$info")" = "$bcount" ] || fail "block_count: want $bcount: $info"
	[ "$(kv changes_number <<<"$info")" = 1 ] || fail "changes_number after the reset: $info"
	B readcbtmap -d a -f "$T/map" >/dev/null
	[ "$(filesize "$T/map")" = "$bcount" ] || fail "readcbtmap: $(filesize "$T/map") bytes, want $bcount"
}

MIB=$((1 << 20))
mkimage "$T/a.img" 64
cp "$T/a.img" "$T/a.orig"
truncate -s 16M "$T/ro.img"
truncate -s 64M "$T/diff.img"
bdf_start --device "a=$T/a.img" --device "ro=$T/ro.img,ro"
B attach -d a

# errors: nothing changes, and the CBT stays good
expect ENODEV device_resize -d nosuch
expect ENODEV device_resize -d nosuch -s 1M
expect EINVAL device_resize -d a -s 0
expect EINVAL device_resize -d a -s 511
expect EINVAL device_resize -d a -s 1000
expect EINVAL device_resize -d a -s 18446744073709551615
expect EPERM device_resize -d ro -s 32M
rc=0; B device_resize -d a -s -1M 2>/dev/null || rc=$?
[ $rc = 2 ] || fail "a negative size: the CLI exited $rc, want 2"
rc=0; B device_resize -d a -s 1X 2>/dev/null || rc=$?
[ $rc = 2 ] || fail "a bad suffix: the CLI exited $rc, want 2"
out=$(B device_resize -d ro)        # a read-only device can be re-read
[ "$(kv size <<<"$out")" = $((16 * MIB)) ] || fail "re-read of ro: $out"
out=$(B device_resize -d a)         # nothing changed: no resize, the map stays good
[ "$(kv size <<<"$out")" = $((64 * MIB)) ] && [ "$(kv old_size <<<"$out")" = $((64 * MIB)) ] ||
	fail "re-read without a change: $out"
[ "$(filesize "$T/a.img")" = $((64 * MIB)) ] || fail "a failed resize changed the file"
cbt_is $((64 * MIB)) false

# a history to lose: one take, some writes
take
io a "write -P 0x11 0 4096"
gen1=$(gen)

# grow behind the daemon's back, then re-read
truncate -s 96M "$T/a.img"
out=$(B device_resize -d a)
[ "$(kv size <<<"$out")" = $((96 * MIB)) ] && [ "$(kv old_size <<<"$out")" = $((64 * MIB)) ] ||
	fail "re-read after truncate: $out"
[ "$(nbdsize a)" = $((96 * MIB)) ] || fail "a new connection sees $(nbdsize a) bytes, want 96 MiB"
B device_list | grep -qx "size=$((96 * MIB))" || fail "device_list: $(B device_list)"
# the map keeps its geometry until the take, and says it is corrupted
cbt_is $((64 * MIB)) true
[ "$(gen)" = "$gen1" ] || fail "the generation changed before the take"
io a "read -P 0 $((64 * MIB)) $((32 * MIB))"      # the new part reads zeroes
io a "write -P 0x5a $((96 * MIB - 4096)) 4096"    # and the new end is writable
io a "read -P 0x5a $((96 * MIB - 4096)) 4096"
io a "read -P 0x11 0 4096"
cmp -s -n $((64 * MIB - 4096)) -i 4096 "$T/a.orig" "$T/a.img" || fail "the old data moved"
take_checked $((96 * MIB))

# in a snapshot, created or taken: EBUSY, and neither the file nor the map change
id=$(B snapshot_create -d a | kv id)
expect EBUSY device_resize -d a -s 128M
B snapshot_appendstorage -i "$id" -f "$T/diff.img" >/dev/null
B snapshot_take -i "$id" >/dev/null
expect EBUSY device_resize -d a -s 128M
expect EBUSY device_resize -d a
expect EBUSY device_resize -d a-image -s 1M
[ "$(filesize "$T/a.img")" = $((96 * MIB)) ] || fail "a refused resize changed the file"
[ "$(nbdsize a-image)" = $((96 * MIB)) ] || fail "the image's size"
cbt_is $((96 * MIB)) false
B snapshot_destroy -i "$id"

# shrink with -s under a connection made before it: that connection keeps its
# size, and what lies past the new end fails cleanly (EINVAL, ENOSPC for
# writes) without growing the file again; new connections see the new size.
export BDFILTER URI_A="$(uri a)" IMG="$T/a.img" ORIG="$T/a.orig"
$PY - <<'EOF' || fail "a connection made before the shrink"
import errno, os, subprocess, nbd
MiB = 1 << 20
h = nbd.NBD()
h.connect_uri(os.environ["URI_A"])
assert h.get_size() == 96 * MiB, h.get_size()
subprocess.run([os.environ["BDFILTER"], "device_resize", "-d", "a", "-s", "32M"], check=True,
               stdout=subprocess.DEVNULL)
assert os.path.getsize(os.environ["IMG"]) == 32 * MiB, "the file was not cut"
assert h.get_size() == 96 * MiB, "the connection lost the size it negotiated"

def fails(what, err, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        assert e.errnum == err, "%s: errno %s, want %s" % (what, e.errnum, err)
        return
    raise AssertionError("%s succeeded past the end" % what)

fails("read past the end", errno.EINVAL, h.pread, 4096, 40 * MiB)
fails("read across the end", errno.EINVAL, h.pread, 8192, 32 * MiB - 4096)
fails("write past the end", errno.ENOSPC, h.pwrite, b"x" * 4096, 40 * MiB)
fails("zero past the end", errno.ENOSPC, h.zero, 4096, 40 * MiB)
fails("cache past the end", errno.EINVAL, h.cache, 4096, 40 * MiB)
fails("trim past the end", errno.EINVAL, h.trim, 4096, 40 * MiB)
assert os.path.getsize(os.environ["IMG"]) == 32 * MiB, "a write past the end grew the file"
# inside the new size, the connection works on
orig = open(os.environ["ORIG"], "rb").read(32 * MiB)
assert h.pread(4096, 32 * MiB - 4096) == orig[-4096:], "the last block"
h.pwrite(b"\x33" * 512, 32 * MiB - 512)
assert h.pread(512, 32 * MiB - 512) == b"\x33" * 512
h.flush()
h.shutdown()

# a new connection sees 32 MiB; asked past it without the client's own bounds check
h = nbd.NBD()
h.connect_uri(os.environ["URI_A"])
assert h.get_size() == 32 * MiB, h.get_size()
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_BOUNDS)
fails("read past the end, new connection", errno.EINVAL, h.pread, 512, 32 * MiB)
h.shutdown()
EOF
bdf_alive
qemu-io -f raw "$(uri a)" -c "read 0 $((33 * MIB))" >"$T/io.out" 2>&1 && fail "qemu-io read past the end: $(cat "$T/io.out")"
io a "read -P 0x33 $((32 * MIB - 512)) 512"
[ "$(nbdsize a)" = $((32 * MIB)) ] || fail "after the shrink a new connection sees $(nbdsize a)"
cmp -s -n $((32 * MIB - 4096 - 512)) -i 4096 "$T/a.orig" "$T/a.img" || fail "data changed by the shrink"
cbt_is $((96 * MIB)) true
take_checked $((32 * MIB))
expect EINVAL markdirtyblock -d a -r $((32 * MIB / 512)):1
B markdirtyblock -d a -r $((32 * MIB / 512 - 1)):1 >/dev/null

# -s grows a (sparse) file; large enough for the block size to double
B device_resize -d a -s 200G >/dev/null
[ "$(filesize "$T/a.img")" = $((200 << 30)) ] || fail "-s 200G: the file is $(filesize "$T/a.img") bytes"
[ "$(nbdsize a)" = $((200 << 30)) ] || fail "-s 200G: NBD size"
io a "write -P 0x66 $(((200 << 30) - 65536)) 65536"
take_checked $((200 << 30))
B device_resize -d a -s 48M >/dev/null
take_checked $((48 * MIB))

# shrunk and grown again: the part between reads zeroes, not what it held
io a "write -P 0x77 $((8 * MIB)) $((MIB))"
B device_resize -d a -s 4M >/dev/null
B device_resize -d a -s 48M >/dev/null
io a "read -P 0 $((4 * MIB)) $((44 * MIB))"

# I/O through repeated resizes: requests inside the smallest size always work
export URI_A
$PY - <<'EOF' &
import os, random, nbd
MiB = 1 << 20
h = nbd.NBD()
h.connect_uri(os.environ["URI_A"])
rnd = random.Random(7)
for i in range(3000):
    off = rnd.randrange(0, 16 * MiB - 65536) & ~511
    if i % 2:
        h.pwrite(bytes([i & 0xff]) * 65536, off)
    else:
        h.pread(65536, off)
h.shutdown()
EOF
load=$!
for i in $(seq 15); do
	B device_resize -d a -s $(( (16 + i % 3 * 16) ))M >/dev/null || fail "resize $i under load"
done
wait $load || fail "I/O under resizes failed"
bdf_alive

# a block device, if this machine lets us make one: -s is refused, a re-read works
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null && truncate -s 8M "$T/loop.img" &&
	loop=$(losetup -f --show "$T/loop.img" 2>/dev/null); then
	trap 'rc_=$?; losetup -d "$loop" 2>/dev/null || true; (exit $rc_); _bdf_cleanup' EXIT
	B device_add -d blk -f "$loop" >/dev/null
	expect ENOTSUP device_resize -d blk -s 16M
	truncate -s 16M "$T/loop.img"
	losetup -c "$loop"
	out=$(B device_resize -d blk)
	[ "$(kv size <<<"$out")" = $((16 * MIB)) ] || fail "block device re-read: $out"
	B device_remove -d blk
	losetup -d "$loop"
	trap _bdf_cleanup EXIT
else
	note "no loop device: block device resize not tested"
fi

bdf_stop
note "ok"
