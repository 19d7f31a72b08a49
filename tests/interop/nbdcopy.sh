#!/bin/bash
# nbdcopy both directions with multi-conn and many requests in flight, export to
# export, and a sparse source that stays sparse.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy nbdinfo

mkimage "$T/disk.img" 64
cp "$T/disk.img" "$T/disk.orig"
mkimage "$T/src.img" 64
truncate -s 64M "$T/target.img" "$T/sparse.img" "$T/fresh.img"
dd if=/dev/urandom of="$T/sparse.img" bs=1M seek=10 count=3 conv=notrunc status=none
dd if=/dev/urandom of="$T/sparse.img" bs=4k seek=12345 count=1 conv=notrunc status=none
bdf_start --device "disk=$T/disk.img" --device "target=$T/target.img" --device "sparse=$T/sparse.img" \
	--device "fresh=$T/fresh.img,filter=passthrough"
# the daemon must offer multi-conn, or --connections=4 falls back to one
nbdinfo --can multi-conn "$(uri disk)" || fail "no multi-conn"

# KiB allocated to a file
alloc_kib() { du -k "$1" | cut -f1; }

# export -> file
nbdcopy --connections=4 --requests=64 --flush "$(uri disk)" "$T/out.img" || fail "nbdcopy export -> file"
cmp "$T/disk.img" "$T/out.img" || fail "nbdcopy export -> file differs"
nbdcopy --connections=1 --requests=1 --request-size=4096 "$(uri disk)" "$T/out1.img" || fail "nbdcopy, one request at a time"
cmp "$T/disk.img" "$T/out1.img" || fail "nbdcopy with 4 KiB requests differs"

# file -> export, read back with another nbdcopy
nbdcopy --connections=4 --requests=64 --flush "$T/src.img" "$(uri target)" || fail "nbdcopy file -> export"
nbdcopy "$(uri target)" "$T/back.img"
cmp "$T/src.img" "$T/back.img" || fail "nbdcopy file -> export, read back"

# export -> export on the same daemon, sparse source over a fully written target
nbdcopy --connections=4 --requests=64 "$(uri sparse)" "$(uri target)" || fail "nbdcopy export -> export"
nbdcopy "$(uri target)" "$T/back2.img"
cmp "$T/sparse.img" "$T/back2.img" || fail "nbdcopy sparse export -> export"

# a sparse source stays sparse: into a fresh export and out into a file
nbdcopy --connections=4 --requests=64 "$T/sparse.img" "$(uri fresh)" || fail "nbdcopy sparse file -> export"
nbdcopy --connections=4 --requests=64 "$(uri sparse)" "$T/sparse-out.img" || fail "nbdcopy sparse export -> file"
cmp "$T/sparse.img" "$T/sparse-out.img" || fail "sparse export -> file differs"

bdf_stop
cmp "$T/sparse.img" "$T/target.img" || fail "target backing file after the copies"
cmp "$T/sparse.img" "$T/fresh.img" || fail "fresh backing file after the copy"
cmp "$T/disk.orig" "$T/disk.img" || fail "the source export was modified"
a=$(alloc_kib "$T/sparse.img"); b=$(alloc_kib "$T/fresh.img"); c=$(alloc_kib "$T/sparse-out.img")
note "allocated KiB: source $a, copied into the export $b, copied out of the export $c"
[ "$b" -le $((a + 4096)) ] || fail "a sparse copy into the export allocated $b KiB (source: $a KiB)"
[ "$c" -le $((a + 4096)) ] || fail "a sparse copy out of the export allocated $c KiB (source: $a KiB)"
