#!/bin/bash
# bdfilter-backup against bdfilterd: a chain of a full backup and two
# incrementals of a tracked device, each from its own snapshot, restored at
# every point to files and to an NBD export, byte for byte against copies of
# the images made with nbdcopy at the time. The full backup reads no hole; an
# incremental reads exactly the 64 KiB blocks written since (a write of zeros,
# a discard and an unaligned write across a block boundary among them). Then
# verify, list, a warning for a backup of the live device, and a second full
# backup that starts a new chain.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy qemu-io
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

MIB=$((1 << 20))
BLK=65536
# 64 MiB: data in [0, 24M) and [40M, 44M), holes elsewhere
truncate -s 64M "$T/d.img"
head -c 24M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
head -c 4M /dev/urandom | dd of="$T/d.img" bs=1M seek=40 conv=notrunc status=none
truncate -s 256M "$T/diff.img"
truncate -s 64M "$T/target.img"
bdf_start --device "d=$T/d.img,filter=tracker" --device "target=$T/target.img"
R="$T/repo"
IMG=$(uri d-image)

# backup N KIND EXTRA...: run it with --json into $T/bN.json
backup() {
	_n=$1 _kind=$2; shift 2
	"$BACKUP" "$_kind" --from "$IMG" --repo "$R" --json "$@" >"$T/b$_n.json" 2>"$T/err" ||
		fail "$_kind backup $_n: $(cat "$T/err")"
	[ ! -s "$T/err" ] || fail "$_kind backup $_n said: $(cat "$T/err")"
	[ "$(jfield "$T/b$_n.json" backup)" = "$_n" ] || fail "$_kind backup is numbered $(jfield "$T/b$_n.json" backup), not $_n"
	[ "$(jfield "$T/b$_n.json" kind)" = "$_kind" ] || fail "backup $_n is not $_kind"
}

# 0: full, 4 connections
id=$(snap d "$T/diff.img")
backup 0 full --connections 4
nbdcopy "$IMG" "$T/ref0.img"
B snapshot_destroy -i "$id"
[ "$(jfield "$T/b0.json" bytes_read)" = $((28 * MIB)) ] ||
	fail "the full backup read $(jfield "$T/b0.json" bytes_read) bytes, the data is 28 MiB (holes read?)"
[ "$(jfield "$T/b0.json" blocks)" = $((28 * MIB / BLK)) ] || fail "full: $(jfield "$T/b0.json" blocks) blocks"
[ "$(jfield "$T/b0.json" changes_number)" = 1 ] || fail "full: changes_number $(jfield "$T/b0.json" changes_number)"
G=$(B cbtinfo -d d | kv generation_id)
[ "$(jfield "$T/b0.json" generation)" = "$G" ] || fail "full: generation is not the device's"

# 1: an unaligned write across blocks 2/3, zeros over data (blocks 16-17), a
# discard of data (block 40), a write into a hole (block 800): 6 blocks
io d "write -P 0x11 $((3 * BLK - 1000)) 3000"
io d "write -z $((16 * BLK)) $((2 * BLK))"
qemu-io -f raw "$(uri d)" -c "discard $((40 * BLK)) $BLK" >/dev/null || fail "discard"
io d "write -P 0x22 $((800 * BLK + 4096)) 512"
id=$(snap d "$T/diff.img")
backup 1 incremental --connections 1
nbdcopy "$IMG" "$T/ref1.img"
B snapshot_destroy -i "$id"
[ "$(jfield "$T/b1.json" blocks)" = 6 ] || fail "incremental 1 holds $(jfield "$T/b1.json" blocks) blocks, 6 were written"
[ "$(jfield "$T/b1.json" bytes_read)" = $((6 * BLK)) ] || fail "incremental 1 read $(jfield "$T/b1.json" bytes_read) bytes"
[ "$(jfield "$T/b1.json" zero_blocks)" -ge 2 ] || fail "incremental 1: zero blocks not seen"
[ "$(jfield "$T/b1.json" bitmap)" = "qemu:dirty-bitmap:$G/1" ] || fail "incremental 1 read $(jfield "$T/b1.json" bitmap)"

# 2: nothing written but one block: the smallest increment
io d "write -P 0x33 $((1000 * BLK)) 4096"
id=$(snap d "$T/diff.img")
backup 2 incremental
nbdcopy "$IMG" "$T/ref2.img"
B snapshot_destroy -i "$id"
[ "$(jfield "$T/b2.json" blocks)" = 1 ] || fail "incremental 2 holds $(jfield "$T/b2.json" blocks) blocks, 1 was written"

# restore every point, and the default (the last)
for n in 0 1 2; do
	"$BACKUP" restore --repo "$R" --at "$n" --to "$T/r$n.img" --quiet >/dev/null 2>"$T/err" ||
		fail "restore --at $n: $(cat "$T/err")"
	cmp "$T/ref$n.img" "$T/r$n.img" || fail "restore --at $n is not snapshot $((n + 1))'s image"
done
"$BACKUP" restore --repo "$R" --to "$T/last.img" --json >"$T/rl.json" || fail "restore (the last)"
cmp "$T/ref2.img" "$T/last.img" || fail "restore without --at is not the last backup"
[ "$(jfield "$T/rl.json" at)" = 2 ] || fail "restore without --at restored $(jfield "$T/rl.json" at)"
# a restored file is sparse where the image is zero
[ "$(du -k "$T/r0.img" | cut -f1)" -lt $((40 * 1024)) ] || fail "restore wrote the holes: $(du -k "$T/r0.img")"
# into an existing larger file: cut to the image's size
head -c 80M /dev/urandom >"$T/big.img"
"$BACKUP" restore --repo "$R" --at 1 --to "$T/big.img" >/dev/null || fail "restore over a larger file"
cmp "$T/ref1.img" "$T/big.img" || fail "restore over a larger file left other bytes"

# restore to an NBD export (a device of bdfilterd's, full of other data first)
head -c 64M /dev/urandom | qemu-io -f raw "$(uri target)" -c "write -P 0x77 0 64M" >/dev/null
"$BACKUP" restore --repo "$R" --at 1 --to "$(uri target)" >/dev/null 2>"$T/err" || fail "restore to NBD: $(cat "$T/err")"
nbdcopy "$(uri target)" "$T/target-read.img"
cmp "$T/ref1.img" "$T/target-read.img" || fail "restore to an NBD export differs"

# verify, list
"$BACKUP" verify --repo "$R" --json >"$T/v.json" || fail "verify: $(cat "$T/v.json")"
[ "$(jfield "$T/v.json" ok)" = True ] && [ "$(jfield "$T/v.json" backups)" = 3 ] || fail "verify: $(cat "$T/v.json")"
"$BACKUP" list --repo "$R" --json >"$T/l.json" || fail "list"
$PY - "$T/l.json" <<'PYEOF' || fail "list --json: $(cat "$T/l.json")"
import json, sys
l = json.load(open(sys.argv[1]))
kinds = [b["kind"] for b in l["backups"]]
assert kinds == ["full", "incremental", "incremental"], kinds
assert [b["changes_number"] for b in l["backups"]] == [1, 2, 3]
assert l["block_size"] == 65536
PYEOF
"$BACKUP" list --repo "$R" | grep -q "^backup=2 device=d kind=incremental" || fail "list's key=value lines"

# a live device does not hold still: the backup says so, and is made all the same
"$BACKUP" full --from "$(uri d)" --repo "$T/live" --quiet >/dev/null 2>"$T/err" || fail "full from the origin"
grep -q "^bdfilter-backup: warning: .* is writable and not a snapshot image" "$T/err" ||
	fail "no warning for a backup of a live device: $(cat "$T/err")"

# a second full starts a new chain: backup 3
id=$(snap d "$T/diff.img")
backup 3 full
nbdcopy "$IMG" "$T/ref3.img"
B snapshot_destroy -i "$id"
"$BACKUP" restore --repo "$R" --at 3 --to "$T/r3.img" >/dev/null || fail "restore --at 3"
cmp "$T/ref3.img" "$T/r3.img" || fail "restore --at 3 differs"
"$BACKUP" restore --repo "$R" --at 1 --to "$T/r1b.img" >/dev/null || fail "restore --at 1 after a new chain"
cmp "$T/ref1.img" "$T/r1b.img" || fail "the old chain changed"
bdf_stop
