#!/bin/bash
# The FUSE export: one file per device, sized and moded after it; files that
# come and go with device_add and device_remove; read-only files that refuse
# writes; data written through the files (directly, and as a filesystem on a
# loop device with and without direct I/O) found byte for byte in the backing
# files after the daemon stops; discard and write-zeroes from a loop device;
# a device removed under an attached loop device fails its I/O with EIO; a
# resized device's file follows its size, and so does a loop device on it;
# a FUSE file (or a loop device on one) is never difference storage.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need mkfs.ext4 blkdiscard cmp
. "$BDF_SRCDIR/tests/functional/fuse-lib.sh"

MIB=$((1 << 20))
truncate -s 64M "$T/a.img"
mkimage "$T/r.img" 8
truncate -s 16M "$T/c.img"
mkimage "$T/d.img" 4
mkimage "$T/z.img" 8
fuse_start --device "a=$T/a.img" --device "r=$T/r.img,ro" --device "z=$T/z.img"

# the directory: one file per device, sized to it; ro files are 0444
[ "$(ls "$FUSE" | tr '\n' ' ')" = "a r z " ] || fail "directory lists: $(ls "$FUSE")"
[ "$(stat -c '%s %a %F' "$FUSE/a")" = "$((64 * MIB)) 644 regular file" ] || fail "a: $(stat -c '%s %a %F' "$FUSE/a")"
[ "$(stat -c '%s %a' "$FUSE/r")" = "$((8 * MIB)) 444" ] || fail "r: $(stat -c '%s %a' "$FUSE/r")"
cmp "$FUSE/r" "$T/r.img" || fail "reading r through its file"
[ "$(stat -f -c %b "$FUSE")" -gt 0 ] || fail "statfs"

# read-only: no write open, no loop device that writes; data intact
dd if=/dev/zero of="$FUSE/r" bs=4k count=1 conv=notrunc 2>"$T/err" && fail "wrote to a read-only file"
grep -q "Read-only file system" "$T/err" || fail "read-only open: $(cat "$T/err")"
LR=$(loop_attach "$FUSE/r" 2>/dev/null)
[ "$(losetup -n -O RO "$LR" | tr -d ' ')" = 1 ] || fail "loop device on a read-only file is writable"
dd if=/dev/zero of="$LR" bs=4k count=1 oflag=direct 2>/dev/null && fail "wrote through a loop device on a read-only file"
loop_detach "$LR"
cmp "$FUSE/r" "$T/r.img" || fail "read-only device changed"

# a file cannot change size
truncate -s 1M "$FUSE/a" 2>/dev/null && fail "truncated a device file"
[ "$(stat -c %s "$FUSE/a")" = $((64 * MIB)) ] || fail "size changed"
chmod 600 "$FUSE/a" 2>/dev/null && fail "chmod on a device file"

# devices added and removed at run time come and go; a name reused is a new file
B device_add -d c -f "$T/c.img" >/dev/null
[ "$(stat -c %s "$FUSE/c")" = $((16 * MIB)) ] || fail "added device c has no file"
B device_remove -d c
[ ! -e "$FUSE/c" ] || fail "removed device c still has a file"
B device_add -d c -f "$T/d.img" >/dev/null
[ "$(stat -c %s "$FUSE/c")" = $((4 * MIB)) ] && cmp -s "$FUSE/c" "$T/d.img" || fail "c re-added on d.img"

# removed under an attached loop device: EIO afterwards, nothing else breaks
LC=$(loop_attach "$FUSE/c" --direct-io=on)
dd if="$LC" of=/dev/null bs=4k count=1 iflag=direct status=none || fail "reading c through a loop device"
B device_remove -d c
dd if="$LC" of=/dev/null bs=4k count=1 skip=1 iflag=direct 2>"$T/err" && fail "read a removed device"
grep -q "Input/output error" "$T/err" || fail "removed device read: $(cat "$T/err")"
loop_detach "$LC"
[ ! -e "$FUSE/c" ] || fail "c listed after removal"
bdf_alive

# a filesystem, through loop devices with and without direct I/O
mkimage "$T/pattern" 3
for dio in on off; do
	L=$(loop_attach "$FUSE/a" --direct-io=$dio)
	[ "$(losetup -n -O DIO "$L" | tr -d ' ')" = "$([ $dio = on ] && echo 1 || echo 0)" ] ||
		fail "loop device direct-io=$dio: $(losetup -l "$L")"
	[ $dio = on ] && { mkfs.ext4 -q -F "$L" >/dev/null || fail "mkfs.ext4"; }
	mnt "$L" "$T/m"
	generate_files "$T/m" "dio-$dio" 4
	cp "$T/pattern" "$T/m/pattern-$dio"
	fstrim "$T/m" 2>/dev/null || true # discards through the loop device
	umnt "$T/m"
	loop_detach "$L"
done

# discard and write-zeroes from a loop device read back as zeroes (on z)
L=$(loop_attach "$FUSE/z")
dd if="$T/pattern" of="$L" bs=1M seek=4 oflag=direct status=none
blkdiscard -o $((4 * MIB)) -l $MIB "$L" || fail "discard through a loop device"
blkdiscard -z -o $((5 * MIB)) -l $MIB "$L" || fail "write-zeroes through a loop device"
loop_detach "$L"
cmp -n $((2 * MIB)) -i $((4 * MIB)):0 "$FUSE/z" /dev/zero || fail "discarded range does not read as zeroes"
cmp -n $MIB -i $((6 * MIB)):$((2 * MIB)) "$FUSE/z" "$T/pattern" || fail "range after the discard changed"
# fallocate on the file itself: punch hole and zero range
fallocate -p -o $((6 * MIB)) -l 4096 "$FUSE/z" || fail "punch hole"
fallocate -z -o $((6 * MIB + 8192)) -l 4096 "$FUSE/z" || fail "zero range"
cmp -n 4096 -i $((6 * MIB)):0 "$FUSE/z" /dev/zero && cmp -n 4096 -i $((6 * MIB + 8192)):0 "$FUSE/z" /dev/zero ||
	fail "punched or zeroed range does not read as zeroes"
cmp -n 4096 -i $((6 * MIB + 4096)):$((2 * MIB + 4096)) "$FUSE/z" "$T/pattern" || fail "fallocate touched its neighbour"

# writes straight into the file; at the end of the device: short, then ENOSPC
dd if="$T/pattern" of="$FUSE/z" bs=64k seek=16 conv=notrunc,fsync status=none || fail "dd into the file"
head -c 6000 /dev/urandom >"$T/tail"
dd if="$T/tail" of="$FUSE/z" bs=6000 seek=$((8 * MIB - 4096)) oflag=seek_bytes conv=notrunc 2>/dev/null || true
dd if=/dev/zero of="$FUSE/z" bs=512 count=1 seek=$((8 * MIB)) oflag=seek_bytes conv=notrunc 2>"$T/err" &&
	fail "wrote past the end"
grep -q "No space left" "$T/err" || fail "write past the end: $(cat "$T/err")"
cp "$FUSE/a" "$T/a.expect"
cp "$FUSE/z" "$T/z.expect"

# a resize shows in the file at once, and a loop device takes it with losetup -c
truncate -s 16M "$T/g.img"
B device_add -d g -f "$T/g.img" >/dev/null || fail "device_add g"
LG=$(loop_attach "$FUSE/g" --direct-io=on)
B device_resize -d g -s 32M >/dev/null || fail "device_resize g 32M"
[ "$(stat -c %s "$FUSE/g")" = $((32 * MIB)) ] || fail "g after growing: $(stat -c %s "$FUSE/g")"
losetup -c "$LG" || fail "losetup -c $LG"
[ "$(blockdev --getsize64 "$LG")" = $((32 * MIB)) ] || fail "$LG after growing: $(blockdev --getsize64 "$LG")"
dd if="$T/pattern" of="$LG" bs=1M count=1 seek=31 oflag=direct status=none || fail "writing the grown end of $LG"
cmp -n "$MIB" -i $((31 * MIB)):0 "$FUSE/g" "$T/pattern" || fail "the grown end read through the file"
B device_resize -d g -s 8M >/dev/null || fail "device_resize g 8M"
[ "$(stat -c %s "$FUSE/g")" = $((8 * MIB)) ] || fail "g after shrinking: $(stat -c %s "$FUSE/g")"
dd if="$FUSE/g" of=/dev/null bs=1M skip=8 count=1 iflag=direct 2>/dev/null
[ "$(dd if="$FUSE/g" bs=1M skip=8 count=1 status=none | wc -c)" = 0 ] || fail "read past the shrunk end"
losetup -c "$LG" || fail "losetup -c $LG"
[ "$(blockdev --getsize64 "$LG")" = $((8 * MIB)) ] || fail "$LG after shrinking: $(blockdev --getsize64 "$LG")"
loop_detach "$LG"
B device_remove -d g >/dev/null || fail "device_remove g"

# a snapshot cannot keep its copies on the daemon's own files (they would go
# back through it): not on a FUSE file, nor on a loop device on one
B attach -d z
truncate -s 4M "$T/zs.img"
id=$(B snapshot_create -d z | kv id)
expect EINVAL snapshot_appendstorage -i "$id" -f "$FUSE/a"
grep -q "a file of the FUSE export" "$T/err" || fail "FUSE file as storage: $(cat "$T/err")"
LS=$(loop_attach "$FUSE/a")
expect EINVAL snapshot_appendstorage -i "$id" -f "$LS"
loop_detach "$LS"
B snapshot_appendstorage -i "$id" -f "$T/zs.img"
B snapshot_destroy -i "$id"

# everything reached the backing file once the daemon is gone
bdf_stop
! grep -q " $FUSE " /proc/self/mountinfo || fail "$FUSE still mounted after stop"
cmp "$T/a.img" "$T/a.expect" && cmp "$T/z.img" "$T/z.expect" ||
	fail "backing files differ from what was read through FUSE"
cmp -n $((3 * MIB)) -i $((1 * MIB)):0 "$T/z.img" "$T/pattern" || fail "dd into the file is not in the backing file"
cmp -n 4096 -i $((8 * MIB - 4096)):0 "$T/z.img" "$T/tail" || fail "the last block is not in the backing file"
L=$(loop_attach "$T/a.img")
mnt "$L" "$T/m" -o ro
check_files "$T/m"
cmp "$T/m/pattern-on" "$T/pattern" && cmp "$T/m/pattern-off" "$T/pattern" || fail "patterns in the filesystem"
umnt "$T/m"
loop_detach "$L"
exit 0
