#!/bin/bash
# Difference storage never overlaps: appending a range already appended (to
# this snapshot or another), a device's store, a file of the FUSE export or
# of the state directory is refused (EEXIST or EINVAL) and changes nothing;
# a device is never added on a file in use as storage. Growing a file is
# done by appending its new part only (-r), and the image stays exact.
# A self-growing storage on an existing file (-f FILE -l LIMIT) uses the
# file's space from its first byte and grows it up to the limit; a limit
# that cannot hold one chunk is refused at create.
#
# Before: appending the same file twice (the natural answer to a
# low_free_space event after `truncate -s +N`) mapped its first range again,
# new chunks overwrote saved ones, and the image read wrong data with
# error_code=0; and -f on a 64 MiB file with -l 16M started after the file's
# content, so the snapshot had no storage and the first write corrupted it.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-img qemu-io fallocate

MIB=$((1 << 20))
mkimage "$T/a.img" 64
mkimage "$T/b.img" 8
S="$T/state"
bdf_start --state-dir "$S" --device "a=$T/a.img,filter=tracker" --device "b=$T/b.img,filter=tracker" \
	--param diff_storage_minimum=16384          # 8 MiB steps
cap() { B snapshot_info -d "$1" | kv storage_capacity; }

# --- a file grown and appended again ------------------------------------------------------
truncate -s 8M "$T/diff.img"
cp "$T/a.img" "$T/a.at-take"
id=$(B snapshot_create -d a | kv id)
B snapshot_appendstorage -i "$id" -f "$T/diff.img"
B snapshot_take -i "$id" --no-freeze >/dev/null
io a "write -P 0x11 0 6M"                        # 24 of the 32 chunks of 256 KiB
truncate -s 16M "$T/diff.img"
expect EEXIST snapshot_appendstorage -i "$id" -f "$T/diff.img"
grep -q "append only its new part" "$T/err" || fail "the error does not say how to grow: $(cat "$T/err")"
expect EEXIST snapshot_appendstorage -i "$id" -f "$T/diff.img" -r 8192:16384   # half old, half new
[ "$(cap a)" = $((8 * MIB)) ] || fail "a refused append changed the storage: $(cap a)"
B snapshot_appendstorage -i "$id" -f "$T/diff.img" -r 16384:16384              # the new 8 MiB
[ "$(cap a)" = $((16 * MIB)) ] || fail "storage after the grow: $(cap a)"
io a "write -P 0x22 $((6 * MIB)) 6M"             # 24 more chunks: into the new part
[ "$(B snapshot_info -d a | kv error_code)" = 0 ] || fail "image corrupted: $(B snapshot_info -d a)"
qemu-img compare -f raw -F raw "$T/a.at-take" "$(uri a-image)" >/dev/null || fail "the image is not the origin at take"

# --- other stores that are not free --------------------------------------------------------
expect EINVAL snapshot_appendstorage -i "$id" -f "$T/a.img"           # a device's store
grep -q "the store of device a" "$T/err" || fail "device store: $(cat "$T/err")"
expect EINVAL snapshot_appendstorage -i "$id" -f "$T/b.img" -r 0:8    # another device's
ln -s "$T/a.img" "$T/a-link.img"
expect EINVAL snapshot_appendstorage -i "$id" -f "$T/a-link.img"      # by another name
expect EINVAL snapshot_appendstorage -i "$id" -f "$S/a.cbt"           # the state directory
grep -q "state directory" "$T/err" || fail "state file: $(cat "$T/err")"
truncate -s 8M "$T/other.img"
expect EINVAL snapshot_appendstorage -i "$id" -f "$T/other.img" -r 0:100 -r 50:100   # overlap each other
id2=$(B snapshot_create -d b | kv id)
expect EEXIST snapshot_appendstorage -i "$id2" -f "$T/diff.img" -r 0:8    # another snapshot's
B snapshot_appendstorage -i "$id2" -f "$T/other.img" -r 0:8192
expect EEXIST snapshot_appendstorage -i "$id" -f "$T/other.img" -r 8191:2
B snapshot_appendstorage -i "$id" -f "$T/other.img" -r 8192:8192           # the rest is free
# a device is not added on a file in use as storage
expect EBUSY device_add -d x -f "$T/diff.img"
[ "$(cap a)" = $((20 * MIB)) ] || fail "storage after the refusals: $(cap a)"
B snapshot_destroy -i "$id2"
B snapshot_destroy -i "$id"
# destroyed: its files are free again
B device_add -d x -f "$T/diff.img" >/dev/null
B device_remove -d x

# --- -f FILE -l LIMIT on a file that exists -------------------------------------------------
fallocate -l 64M "$T/pre.img"
cp "$T/a.img" "$T/a.at-take"
id=$(B snapshot_create -d a -f "$T/pre.img" -l 16M | kv id)
[ "$(cap a)" = $((64 * MIB)) ] || fail "-f on a 64 MiB file: capacity $(cap a)"
B snapshot_take -i "$id" --no-freeze >/dev/null
io a "write -P 0x33 0 40M"
info=$(B snapshot_info -d a)
[ "$(kv error_code <<<"$info")" = 0 ] || fail "-f on an existing file: image corrupted: $info"
qemu-img compare -f raw -F raw "$T/a.at-take" "$(uri a-image)" >/dev/null || fail "image with -f on an existing file"
expect EEXIST snapshot_appendstorage -i "$id" -f "$T/pre.img" -r 0:8    # the growing file is claimed
B snapshot_destroy -i "$id"
# a file grows past its size up to the limit
truncate -s 1M "$T/small.img"
id=$(B snapshot_create -d a -f "$T/small.img" -l 24M | kv id)
B snapshot_take -i "$id" --no-freeze >/dev/null
io a "write -P 0x44 0 20M"
[ "$(B snapshot_info -d a | kv error_code)" = 0 ] || fail "growing from 1 MiB: $(B snapshot_info -d a)"
[ "$(stat -c %s "$T/small.img")" -ge $((20 * MIB)) ] || fail "the file did not grow: $(stat -c %s "$T/small.img")"
B snapshot_destroy -i "$id"
# a limit that cannot hold one chunk (256 KiB here)
expect EINVAL snapshot_create -d a -f "$T/tiny.img" -l 64K
grep -q "cannot hold one" "$T/err" || fail "tiny limit: $(cat "$T/err")"
expect EINVAL snapshot_create -f "$T/tiny.img" -l 128K        # without devices: the smallest chunk
bdf_alive
bdf_stop
