#!/bin/bash
# base:allocation on a snapshot image: what the origin held at take, chunk by
# chunk. A chunk still on the origin has the origin's allocation; a chunk the
# copy-before-write moved to the storage is data. Origin writes into a hole and
# discards of data after take must not change what the image says it holds,
# nor what it reads.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo qemu-io nbdcopy

MIB=$((1 << 20))
truncate -s 64M "$T/a.img"
head -c 4M /dev/urandom | dd of="$T/a.img" bs=1M seek=8 conv=notrunc status=none
truncate -s 256M "$T/diff.img"
bdf_start --device "a=$T/a.img,filter=tracker"
id=$(B snapshot_create -d a | kv id)
B snapshot_appendstorage -i "$id" -f "$T/diff.img" >/dev/null
B snapshot_take -i "$id" >/dev/null
nbdcopy "$(uri a-image)" "$T/at-take.img"

# map LINES: nbdinfo --map's "offset length type" per extent, types as numbers
map() { nbdinfo --map "$(uri "$1")" | awk '{ print $1, $2, $3 }'; }
[ "$(map a-image)" = "0 $((8 * MIB)) 3
$((8 * MIB)) $((4 * MIB)) 0
$((12 * MIB)) $((52 * MIB)) 3" ] || fail "image map at take: $(map a-image)"

# a write into a hole of the origin and a discard of its data, after take
io a "write -P 0x5a $((40 * MIB)) 4096"
qemu-io -f raw "$(uri a)" -c "discard $((8 * MIB)) $((1 * MIB))" >/dev/null || fail "discard on the origin"
# the chunks copied are data; the rest is as it was at take
out=$(map a-image)
echo "$out" | awk -v lo=$((40 * MIB)) '$1 <= lo && lo < $1 + $2 { exit !($3 == 0) }' ||
	fail "the copied chunk at 40 MiB is not data: $out"
echo "$out" | awk -v lo=$((8 * MIB)) '$1 <= lo && lo < $1 + $2 { exit !($3 == 0) }' ||
	fail "the discarded region at 8 MiB is not data on the image: $out"
# a hole far from both writes stays a hole
echo "$out" | awk -v lo=$((60 * MIB)) '$1 <= lo && lo < $1 + $2 { exit !($3 == 3) }' ||
	fail "the hole at 60 MiB is not a hole on the image: $out"
# and the image reads what it read at take
nbdcopy "$(uri a-image)" "$T/later.img"
cmp "$T/at-take.img" "$T/later.img" || fail "the image changed after origin writes"
B snapshot_destroy -i "$id"
bdf_stop
