#!/bin/bash
# qemu-img info / compare / convert / map against bdfilterd, with and without a
# pass-through filter (the data path must be identical).
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-img

M=$((1 << 20))
mkimage "$T/disk.img" 64
cp "$T/disk.img" "$T/disk.orig"
mkimage "$T/src.img" 64
truncate -s 64M "$T/plain.img" "$T/other.img"
truncate -s 48M "$T/sparse.img"
dd if=/dev/urandom of="$T/sparse.img" bs=1M seek=3 count=2 conv=notrunc status=none
dd if=/dev/urandom of="$T/sparse.img" bs=1M seek=40 count=1 conv=notrunc status=none
bdf_start --device "disk=$T/disk.img" --device "plain=$T/plain.img" \
	--device "via=$T/other.img,filter=passthrough" --device "sparse=$T/sparse.img"

vsize() { qemu-img info -f raw --output=json "$1" | $PY -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
[ "$(vsize "$(uri disk)")" = $((64 * M)) ] || fail "qemu-img info disk: virtual size $(vsize "$(uri disk)")"
[ "$(vsize "$(uri via)")" = $((64 * M)) ] || fail "qemu-img info via: virtual size $(vsize "$(uri via)")"
[ "$(vsize "$(uri sparse)")" = $((48 * M)) ] || fail "qemu-img info sparse: virtual size $(vsize "$(uri sparse)")"
qemu-img info "$(uri disk)" | grep -q "^virtual size: 64 MiB" || fail "qemu-img info (human): $(qemu-img info "$(uri disk)")"

# compare: identical, and a real difference is found
qemu-img compare -f raw -F raw "$T/disk.img" "$(uri disk)" || fail "compare export with its file"
rc=0; qemu-img compare -q -f raw -F raw "$T/src.img" "$(uri disk)" || rc=$?
[ $rc -eq 1 ] || fail "compare of different images returned $rc, want 1"

# convert out of the export (plain and through the filter)
qemu-img convert -f raw -O raw "$(uri disk)" "$T/out.img"
cmp "$T/disk.img" "$T/out.img" || fail "convert out of the export"

# convert into the export (-n: the target exists), plain and through the filter
qemu-img convert -n -f raw -O raw "$T/src.img" "$(uri plain)"
qemu-img compare -f raw -F raw "$T/src.img" "$(uri plain)" || fail "compare after convert into the export"
qemu-img convert -n -f raw -O raw "$T/src.img" "$(uri via)"
qemu-img compare -f raw -F raw "$T/src.img" "$(uri via)" || fail "compare after convert into the filtered export"
qemu-img convert -f raw -O raw "$(uri via)" "$T/out-via.img"
cmp "$T/src.img" "$T/out-via.img" || fail "convert out of the filtered export"

# many requests in flight, written out of order (-W) by 16 coroutines
qemu-img convert -n -W -m 16 -f raw -O raw "$T/disk.orig" "$(uri plain)" || fail "convert -W -m 16 into the export"
qemu-img compare -f raw -F raw "$T/disk.orig" "$(uri plain)" || fail "compare after convert -W -m 16"
qemu-img convert -W -m 16 -f raw -O raw "$(uri plain)" "$T/out-w.img" || fail "convert -W -m 16 out of the export"
cmp "$T/disk.orig" "$T/out-w.img" || fail "convert -W -m 16 out of the export differs"
# qemu-img bench: depth 64, 4 KiB reads, then writes, with flushes
qemu-img bench -f raw -d 64 -c 20000 -s 4096 "$(uri disk)" >/dev/null || fail "qemu-img bench reads"
qemu-img bench -f raw -w -d 64 -c 2000 -s 4096 -S 8192 -o 1048576 --flush-interval=500 --pattern=0x5a "$(uri plain)" \
	>/dev/null || fail "qemu-img bench writes"
cp "$T/disk.orig" "$T/plain.expect"
$PY - "$T/plain.expect" <<'PY'
import sys
# bench -w -c 2000 -s 4096 -S 8192 -o 1 MiB: 4 KiB of 0x5a every 8 KiB from 1 MiB
with open(sys.argv[1], "r+b") as f:
    for i in range(2000):
        f.seek((1 << 20) + i * 8192)
        f.write(b"\x5a" * 4096)
PY
qemu-img compare -f raw -F raw "$T/plain.expect" "$(uri plain)" || fail "the export after qemu-img bench writes"

# a qcow2 source converted into the export, and the export converted to qcow2 and back
qemu-img convert -f raw -O qcow2 "$T/disk.orig" "$T/disk.qcow2"
qemu-img convert -n -f qcow2 -O raw "$T/disk.qcow2" "$(uri via)"
qemu-img compare -f raw -F raw "$T/disk.orig" "$(uri via)" || fail "qcow2 -> export"
qemu-img convert -f raw -O qcow2 "$(uri sparse)" "$T/sparse.qcow2"
qemu-img compare -f qcow2 -F raw "$T/sparse.qcow2" "$T/sparse.img" || fail "sparse export -> qcow2"

# map: qemu-img reads base:allocation; data where dd wrote, zeroes elsewhere
qemu-img map -f raw --output=json "$(uri sparse)" >"$T/map.json" || fail "qemu-img map"
$PY - "$T/map.json" "$M" <<'PY' || fail "qemu-img map of the sparse export: $(cat "$T/map.json")"
import json, sys
M = int(sys.argv[2])
ext = json.load(open(sys.argv[1]))
assert sum(e["length"] for e in ext) == 48 * M, "map does not cover the export"
pos = 0
for e in ext:
    assert e["start"] == pos, "gap at %d" % pos
    pos += e["length"]
data = [(e["start"], e["length"]) for e in ext if e["data"]]
# merge neighbours
merged = []
for s, l in data:
    if merged and merged[-1][0] + merged[-1][1] == s:
        merged[-1] = (merged[-1][0], merged[-1][1] + l)
    else:
        merged.append((s, l))
assert merged == [(3 * M, 2 * M), (40 * M, M)], merged
for e in ext:
    if not e["data"]:
        assert e["zero"], e
PY

bdf_stop
cmp "$T/plain.expect" "$T/plain.img" || fail "backing file after convert and bench into the export"
cmp "$T/disk.orig" "$T/other.img" || fail "filtered backing file after convert into the export"
cmp "$T/disk.orig" "$T/disk.img" || fail "the source export was modified"
grep -q "via: passthrough forwarded [1-9]" "$BDF_LOG" || fail "requests did not go through the passthrough filter"
