#!/bin/bash
# blksnap's 1000-simple test on a real filesystem (ext4, or xfs: the first
# argument), through the FUSE export: two devices, each formatted and mounted
# through losetup on its FUSE file (one loop device with direct I/O and 4 KiB
# sectors as blksnap's test has it, one through the page cache); files written
# and their md5 sums recorded inside the filesystems; a snapshot of both taken
# with the filesystems frozen; more files written; each image attached and
# mounted and found to hold exactly the files of the instant of take; image
# writes that survive a remount; destroy; the origins checked after a remount.
. "$BDF_SRCDIR/tests/functional/lib.sh"
FS=${1:-ext4}
need "mkfs.$FS"
. "$BDF_SRCDIR/tests/functional/fuse-lib.sh"

case $FS in
ext4) SIZE=128M; MKFS="mkfs.ext4 -q -F"; IMAGE_OPTS="" ;;
# xfsprogs refuses filesystems under 300 MB; an image has its origin's UUID.
xfs) SIZE=320M; MKFS="mkfs.xfs -q -f"; IMAGE_OPTS="-o nouuid" ;;
*) fail "unknown filesystem $FS" ;;
esac

truncate -s "$SIZE" "$T/o1.img" "$T/o2.img"
truncate -s 1G "$T/diff.img"
fuse_start --device "o1=$T/o1.img,filter=tracker" --device "o2=$T/o2.img,filter=tracker"

L1=$(loop_attach "$FUSE/o1" --direct-io=on --sector-size 4096)
L2=$(loop_attach "$FUSE/o2" --direct-io=off)
$MKFS "$L1" >/dev/null || fail "mkfs.$FS on $L1"
$MKFS "$L2" >/dev/null || fail "mkfs.$FS on $L2"
mnt "$L1" "$T/m1"
mnt "$L2" "$T/m2"

# Left in the page cache: only the freeze at take writes them out.
generate_files "$T/m1" before 9
generate_files "$T/m2" before 5
cp "$T/m1/hash.md5" "$T/m1.before"
cp "$T/m2/hash.md5" "$T/m2.before"

id=$(B snapshot_create -d o1 -d o2 | kv id)
[ -n "$id" ] || fail "snapshot_create printed no id"
B snapshot_appendstorage -i "$id" -f "$T/diff.img" >/dev/null
out=$(B snapshot_take -i "$id") || fail "snapshot_take: $out"
[ "$(kv frozen <<<"$out")" = 2 ] || fail "snapshot_take froze $(kv frozen <<<"$out") filesystems, expected 2"
grep -q "frozen already" "$BDF_LOG" && fail "a filesystem was found frozen"
# thawed: writes go on at once
timeout 20 touch "$T/m1/thawed" "$T/m2/thawed" || fail "a filesystem stayed frozen after take"
[ -f "$FUSE/o1-image" ] && [ -f "$FUSE/o2-image" ] || fail "image files missing: $(ls "$FUSE")"

generate_files "$T/m1" after 3
generate_files "$T/m2" after 3
check_files "$T/m1"
check_files "$T/m2"

# The images: what the filesystems held at take, and writable.
I1=$(loop_attach "$FUSE/o1-image" --direct-io=on --sector-size 4096)
I2=$(loop_attach "$FUSE/o2-image")
# shellcheck disable=SC2086
mnt "$I1" "$T/i1" $IMAGE_OPTS
# shellcheck disable=SC2086
mnt "$I2" "$T/i2" $IMAGE_OPTS
for n in 1 2; do
	cmp -s "$T/i$n/hash.md5" "$T/m$n.before" || fail "image $n: hash list is not the one at take"
	check_files "$T/i$n"
	[ ! -e "$T/i$n/after-0" ] && [ ! -e "$T/i$n/thawed" ] || fail "image $n has files written after take"
	generate_files "$T/i$n" snapshot 3
	umnt "$T/i$n"
done
# shellcheck disable=SC2086
mnt "$I1" "$T/i1" $IMAGE_OPTS
# shellcheck disable=SC2086
mnt "$I2" "$T/i2" $IMAGE_OPTS
check_files "$T/i1"
check_files "$T/i2"
grep -q snapshot-2 "$T/i2/hash.md5" || fail "image writes did not survive a remount"
umnt "$T/i1"
umnt "$T/i2"
loop_detach "$I1"
loop_detach "$I2"

B snapshot_destroy -i "$id"
[ ! -e "$FUSE/o1-image" ] && [ ! -e "$FUSE/o2-image" ] || fail "image files left after destroy: $(ls "$FUSE")"

# The origins never saw the image writes.
for n in 1 2; do
	umnt "$T/m$n"
done
mnt "$L1" "$T/m1"
mnt "$L2" "$T/m2"
check_files "$T/m1"
check_files "$T/m2"
grep -q snapshot "$T/m1/hash.md5" && fail "image writes reached origin 1"
umnt "$T/m1"
umnt "$T/m2"
loop_detach "$L1"
loop_detach "$L2"
bdf_stop
! grep -q " $FUSE " /proc/self/mountinfo || fail "$FUSE still mounted after stop"
exit 0
