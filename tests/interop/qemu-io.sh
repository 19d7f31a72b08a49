#!/bin/bash
# qemu-io: pattern writes and reads at unaligned offsets, discard and write
# zeroes, then the backing file checked byte for byte.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-io

mkimage "$T/disk.img" 16
cp "$T/disk.img" "$T/expect.img"
bdf_start --device "disk=$T/disk.img"

# offset:length:pattern, crossing 512, 4 KiB and 64 KiB boundaries
cases="1000:3000:0xab 4095:2:0x11 65535:65538:0x5c 131071:1:0xee 1048575:4097:0x42"
for c in $cases; do
	IFS=: read -r off len pat <<<"$c"
	out=$(qemu-io -f raw "$(uri disk)" -c "write -P $pat $off $len" -c "read -P $pat $off $len") ||
		fail "qemu-io $c: $out"
	grep -q "verification failed" <<<"$out" && fail "qemu-io pattern check $c: $out"
	$PY - "$T/expect.img" "$off" "$len" "$pat" <<'PY'
import sys
path, off, n, pat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 16)
with open(path, "r+b") as f:
    f.seek(off)
    f.write(bytes([pat]) * n)
PY
done

# write zeroes (allocated and may-unmap) and discard read back as zero
qemu-io -f raw "$(uri disk)" -c 'write -z 200000 10000' -c 'write -z -u 2097152 1048576' \
	-c 'read -P 0 200000 10000' -c 'read -P 0 2097152 1048576' >"$T/out" || fail "write -z"
grep -q "verification failed" "$T/out" && fail "zeroes did not read back as zero"
$PY - "$T/expect.img" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    for off, n in ((200000, 10000), (2097152, 1048576)):
        f.seek(off)
        f.write(bytes(n))
PY
qemu-io -f raw "$(uri disk)" -c 'discard 8388608 1048576' >/dev/null || fail "discard"

bdf_stop
# discard is advisory: compare everything but the discarded range
cmp -n 8388608 "$T/disk.img" "$T/expect.img" || fail "backing file differs before the discarded range"
cmp -i 9437184 "$T/disk.img" "$T/expect.img" || fail "backing file differs after the discarded range"
