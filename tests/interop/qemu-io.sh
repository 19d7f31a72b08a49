#!/bin/bash
# qemu-io: pattern writes and reads at unaligned offsets across 512 B, 4 KiB and
# 64 KiB boundaries; discard, write zeroes and write zeroes that may unmap read
# back as zero; then the backing file checked byte for byte (cmp and od).
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-io od

mkimage "$T/disk.img" 16
cp "$T/disk.img" "$T/expect.img"
bdf_start --device "disk=$T/disk.img"

# expect OFF LEN BYTE: what the backing file must hold now
expect() {
	$PY - "$T/expect.img" "$1" "$2" "$3" <<'PY'
import sys
path, off, n, pat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(off)
    f.write(bytes([pat]) * n)
PY
}
# qio ARGS...: qemu-io on the export; any failure or failed verification fails the test
qio() {
	out=$(qemu-io -f raw "$(uri disk)" "$@" 2>&1) || fail "qemu-io $*: $out"
	! grep -qi "fail\|error" <<<"$out" || fail "qemu-io $*: $out"
}

# offset:length:pattern, crossing 512, 4 KiB and 64 KiB boundaries
cases="1000:3000:0xab 4095:2:0x11 4097:511:0x12 65535:65538:0x5c 131071:1:0xee 1048575:4097:0x42"
cases="$cases 196607:262146:0x77 3:1:0x01 16777215:1:0xfe 16773000:4096:0x99"
for c in $cases; do
	IFS=: read -r off len pat <<<"$c"
	qio -c "write -P $pat $off $len" -c "read -P $pat $off $len"
	expect "$off" "$len" "$pat"
done
# the neighbours of each write are untouched: read everything back in one go,
# with a second connection, and compare with the expected image
qemu-io -f raw "$(uri disk)" -c "read -v 65530 16" | grep -q "^0000fffa:  .. .. .. .. .. 5c 5c 5c" ||
	fail "read -v across 64 KiB: $(qemu-io -f raw "$(uri disk)" -c "read -v 65530 16")"
qemu-img compare -q -f raw -F raw "$T/expect.img" "$(uri disk)" || fail "export differs from the expected image"
# the same bytes through a filtered read-only export of a copy (one file is
# one device's store: a second device on it is refused)
cp "$T/disk.img" "$T/via.img"
B device_add -d via -f "$T/via.img" --ro >/dev/null
B attach -d via -n passthrough
qemu-img compare -q -f raw -F raw "$T/expect.img" "$(uri via)" || fail "filtered export differs from the expected image"
# qemu refuses to open a read-only export for writing
rc=0; qemu-io -f raw "$(uri via)" -c "write -P 1 0 512" >"$T/out" 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -qi "denied\|read-only\|read only" "$T/out" || fail "a read-only export opened for writing: rc=$rc $(cat "$T/out")"

# write zeroes (allocated), write zeroes that may unmap, and discard: all read back as zero
qio -c 'write -z 200000 10000' -c 'read -P 0 200000 10000'
qio -c 'write -z 2097152 1048576' -c 'read -P 0 2097152 1048576'
qio -c 'write -z -u 4194304 1048576' -c 'read -P 0 4194304 1048576'
qio -c 'write -z -u 6000000 70000' -c 'read -P 0 6000000 70000'
qio -c 'discard 8388608 1048576' -c 'read -P 0 8388608 1048576'
qio -c 'discard 10485760 65536' -c 'read -P 0 10485760 65536' -c 'read -P 0x99 16773000 4096'
qio -c 'discard 12000001 70001' -c 'read -P 0 12000001 70001'
for r in 200000:10000 2097152:1048576 4194304:1048576 6000000:70000 8388608:1048576 10485760:65536 12000001:70001; do
	expect "${r%:*}" "${r#*:}" 0
done
qemu-img compare -q -f raw -F raw "$T/expect.img" "$(uri disk)" || fail "export differs after zeroing"

bdf_stop
cmp "$T/disk.img" "$T/expect.img" || fail "backing file differs from the expected image"
# od on the backing file: the first write and its neighbours
got=$(od -An -tx1 -v -j 998 -N 4 "$T/disk.img" | tr -d ' \n')
[ "${got:4:4}" = abab ] || fail "od at 1000: $got"
got=$(od -An -tx1 -v -j 3998 -N 4 "$T/disk.img" | tr -d ' \n')
[ "${got:0:4}" = abab ] || fail "od at 3998: $got"
[ "$(od -An -tx1 -v -j 200000 -N 10000 "$T/disk.img" | tr -d ' \n' | tr -d 0)" = "" ] || fail "od: write -z range not zero"
# write zeroes without -u keeps the blocks allocated (NO_HOLE); -u and discard may punch holes
$PY - "$T/disk.img" <<'PY' || fail "allocation of the zeroed ranges"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
def allocated(off):
    try:
        return os.lseek(fd, off, os.SEEK_DATA) == off
    except OSError:
        return False
assert allocated(2097152) and allocated(2097152 + 1048576 - 4096), "write -z (NO_HOLE) left a hole"
holes = [not allocated(o) for o in (4194304, 8388608)]
print("# write -z -u / discard left holes: %s" % holes)
PY
