#!/bin/bash
# An image's name is always free: "NAME-image" is kept for the image of NAME,
# so no device may be called so (device_add and --device refuse it), and a
# take never fails for want of its images' names. Before, a device called
# a-image made the take of a fail after its instant (copy-before-write armed,
# the CBT switched) and every retry get EALREADY.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-io

mkimage "$T/a.img" 4
mkimage "$T/x.img" 4
truncate -s 64M "$T/diff.img"

rc=0; timeout 10 "$BDFILTERD" --foreground --control none --nbd-listen "unix:$SOCK" \
	--device "a=$T/a.img" --device "b-image=$T/x.img" >"$T/out" 2>&1 || rc=$?
[ $rc -eq 1 ] || fail "--device b-image=...: exit $rc"
grep -q "names ending in -image are kept for snapshot images" "$T/out" || fail "--device b-image: $(cat "$T/out")"

bdf_start --device "a=$T/a.img,filter=tracker"
expect EINVAL device_add -d a-image -f "$T/x.img"
expect EINVAL device_add -d -image -f "$T/x.img"
B device_add -d a-image2 -f "$T/x.img" >/dev/null          # only the suffix is kept
cp "$T/a.img" "$T/a.at-take"
id=$(snap a "$T/diff.img")
[ "$(B snapshot_info -d a | kv image)" = a-image ] || fail "image name"
io a "write -P 0x42 0 64k"
qemu-img compare -f raw -F raw "$T/a.at-take" "$(uri a-image)" >/dev/null || fail "image differs from the origin at take"
B snapshot_destroy -i "$id"
bdf_stop
