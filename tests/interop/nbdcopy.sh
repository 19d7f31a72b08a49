#!/bin/bash
# nbdcopy both directions, multi-conn, many requests in flight; a sparse source.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy

mkimage "$T/disk.img" 64
mkimage "$T/src.img" 64
truncate -s 64M "$T/target.img"
truncate -s 64M "$T/sparse.img"
dd if=/dev/urandom of="$T/sparse.img" bs=1M seek=10 count=3 conv=notrunc status=none
bdf_start --device "disk=$T/disk.img" --device "target=$T/target.img" --device "sparse=$T/sparse.img"

nbdcopy --connections=4 --requests=64 "$(uri disk)" "$T/out.img"
cmp "$T/disk.img" "$T/out.img" || fail "nbdcopy export -> file"

nbdcopy --connections=4 --requests=64 "$T/src.img" "$(uri target)"
nbdcopy "$(uri target)" "$T/back.img"
cmp "$T/src.img" "$T/back.img" || fail "nbdcopy file -> export, read back"

# export -> export on the same daemon, sparse source
nbdcopy --connections=2 "$(uri sparse)" "$(uri target)"
nbdcopy "$(uri target)" "$T/back2.img"
cmp "$T/sparse.img" "$T/back2.img" || fail "nbdcopy sparse export -> export"

bdf_stop
cmp "$T/sparse.img" "$T/target.img" || fail "target backing file after copies"
