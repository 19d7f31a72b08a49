#!/bin/bash
# The FUSE export at the edges of a device's life: a snapshot destroyed while a
# loop device holds its image (the image's I/O fails with EIO, nothing else
# does), and SIGTERM while a filesystem is mounted through a loop device and a
# held snapshot's image is attached to another: the daemon waits its grace
# period (10 s) for the loop devices, then detaches the mount and exits 0; the
# loop devices fail their I/O from then on, and what the filesystem had synced
# is in the backing file.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need mkfs.ext4
. "$BDF_SRCDIR/tests/functional/fuse-lib.sh"

truncate -s 64M "$T/a.img" "$T/diff.img"
fuse_start --device "a=$T/a.img,filter=tracker"
L=$(loop_attach "$FUSE/a" --direct-io=on)
mkfs.ext4 -q -F "$L" >/dev/null || fail "mkfs.ext4"
mnt "$L" "$T/m"
generate_files "$T/m" before 4

# an image destroyed under its loop device
id=$(B snapshot_create -d a | kv id)
B snapshot_appendstorage -i "$id" -f "$T/diff.img" >/dev/null
B snapshot_take -i "$id" >/dev/null
LI=$(loop_attach "$FUSE/a-image" --direct-io=on)
dd if="$LI" of=/dev/null bs=64k count=4 iflag=direct status=none || fail "reading the image"
B snapshot_destroy -i "$id"
[ ! -e "$FUSE/a-image" ] || fail "image file left after destroy"
dd if="$LI" of=/dev/null bs=64k count=1 skip=100 iflag=direct 2>"$T/err" && fail "read a destroyed image"
grep -q "Input/output error" "$T/err" || fail "destroyed image read: $(cat "$T/err")"
dd if=/dev/zero of="$LI" bs=64k count=1 oflag=direct 2>/dev/null && fail "wrote to a destroyed image"
loop_detach "$LI"
bdf_alive
generate_files "$T/m" after 2
check_files "$T/m"
sync -f "$T/m/hash.md5"
# a snapshot held, its image attached too, at SIGTERM
id=$(B snapshot_create -d a | kv id)
B snapshot_appendstorage -i "$id" -f "$T/diff.img" >/dev/null
B snapshot_take -i "$id" >/dev/null
LI=$(loop_attach "$FUSE/a-image" --direct-io=on)
dd if="$LI" of=/dev/null bs=64k count=4 iflag=direct status=none || fail "reading the second image"

# SIGTERM with the filesystem still mounted through the loop device
start=$(date +%s)
kill -TERM "$BDF_PID"
rc=0
timeout 60 tail --pid="$BDF_PID" -f /dev/null || fail "bdfilterd still runs 60 s after SIGTERM"
wait "$BDF_PID" || rc=$?
BDF_PID=
took=$(($(date +%s) - start))
[ $rc -eq 0 ] || fail "bdfilterd exited with $rc after SIGTERM"
note "SIGTERM with a mounted loop device: exited after ${took}s"
[ $took -ge 8 ] || fail "bdfilterd did not wait for the busy mount (${took}s)"
grep -q "detached while busy" "$BDF_LOG" || fail "no word of the busy mount in the log"
! grep -q " $FUSE .* fuse.bdfilter " /proc/self/mountinfo || fail "$FUSE still mounted after stop"
dd if="$L" of=/dev/null bs=4k count=1 skip=7 iflag=direct 2>/dev/null && fail "loop device still reads after stop"
dd if="$LI" of=/dev/null bs=4k count=1 skip=9 iflag=direct 2>/dev/null && fail "image loop device still reads after stop"
loop_detach "$LI"

umount "$T/m" 2>/dev/null || umount -l "$T/m"
_FUSE_MOUNTS=""
loop_detach "$L"
# What was synced before the stop is in the backing file.
L=$(loop_attach "$T/a.img")
e2fsck -fn "$L" >/dev/null 2>&1 || note "e2fsck finds the journal to replay, as after a power cut"
mnt "$L" "$T/m2"
check_files "$T/m2"
umnt "$T/m2"
loop_detach "$L"
exit 0
