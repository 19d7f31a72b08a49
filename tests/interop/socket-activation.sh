#!/bin/bash
# Socket activation: nbdinfo and nbdcopy start bdfilterd themselves with
# LISTEN_PID/LISTEN_FDS (libnbd's "[ CMD ]" syntax).
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo nbdcopy

mkimage "$T/disk.img" 4
size=$(nbdinfo --size -- [ "$BDFILTERD" --control none --device "disk=$T/disk.img" ]) || fail "nbdinfo with socket activation"
[ "$size" = $((4 << 20)) ] || fail "size $size"
nbdcopy -- [ "$BDFILTERD" --control none --device "disk=$T/disk.img" ] "$T/out.img" || fail "nbdcopy with socket activation"
cmp "$T/disk.img" "$T/out.img" || fail "copy differs"
# no --nbd-listen and no LISTEN_FDS: a clear error
rc=0; "$BDFILTERD" --control none --device "disk=$T/disk.img" 2>"$T/err" || rc=$?
[ $rc -ne 0 ] && grep -q "nothing to listen on" "$T/err" || fail "no listener: rc=$rc $(cat "$T/err")"
