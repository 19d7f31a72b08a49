#!/bin/bash
# qemu-img info / compare / convert against bdfilterd, with and without a filter.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-img

mkimage "$T/disk.img" 64
mkimage "$T/src.img" 64
truncate -s 64M "$T/other.img"
bdf_start --device "disk=$T/disk.img" --device "via=$T/other.img,filter=passthrough"

size=$(qemu-img info --output=json "$(uri disk)" | $PY -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
[ "$size" = $((64 << 20)) ] || fail "qemu-img info: virtual size $size"

qemu-img compare -f raw -F raw "$T/disk.img" "$(uri disk)" || fail "compare export with its file"

qemu-img convert -f raw -O raw "$(uri disk)" "$T/out.img"
cmp "$T/disk.img" "$T/out.img" || fail "convert out of the export"

# into the export through the passthrough filter (-n: the target exists)
qemu-img convert -n -f raw -O raw "$T/src.img" "$(uri via)"
qemu-img compare -f raw -F raw "$T/src.img" "$(uri via)" || fail "compare after convert into the export"
bdf_stop
cmp "$T/src.img" "$T/other.img" || fail "backing file after convert into the export"
grep -q "passthrough forwarded [1-9]" "$BDF_LOG" || fail "requests did not go through the passthrough filter"
