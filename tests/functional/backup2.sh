#!/bin/bash
# bdfilter-backup's repository version 2 against bdfilterd: a full backup and
# incrementals of a tracked device from its snapshots, each restored (with 1
# and with 4 writers) byte for byte against the image copied at the time; a
# second full of the unchanged device stores no chunk; a second device with
# the same data in the same repository stores no chunk either; compression
# halves a device of text; the same with a key (encrypted), and every
# backup's index is complete (an older backup restores after a newer one).
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy qemu-io
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

MIB=$((1 << 20))
truncate -s 64M "$T/d.img" "$T/e.img" "$T/txt.img"
head -c 16M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
head -c 4M /dev/urandom | dd of="$T/d.img" bs=1M seek=40 conv=notrunc status=none
cp "$T/d.img" "$T/e.img"
# text: compresses well, and no two 64 KiB blocks alike (line numbers)
$PY -c '
import sys
with open(sys.argv[1], "r+b") as f:
    n = 0
    while f.tell() < 24 << 20:
        f.write(b"%08d the quick brown fox jumps over the lazy dog, %d times\n" % (n, n * 7919 % 10007))
        n += 1' "$T/txt.img"
truncate -s 256M "$T/diff.img"
printf 'correct horse battery staple\n' >"$T/key"
printf 'another key entirely\n' >"$T/wrongkey"
bdf_start --device "d=$T/d.img,filter=tracker" --device "e=$T/e.img,filter=tracker" --device "txt=$T/txt.img"
IMG=$(uri d-image)

# run NAME ARGS...: bdfilter-backup ARGS --json into $T/NAME.json, no stderr
run() {
	_n=$1; shift
	"$BACKUP" "$@" --json >"$T/$_n.json" 2>"$T/err" || fail "$*: $(cat "$T/err")"
	# (a live device's export gets its warning: e and txt are not written)
	! grep -v "warning: .* is writable and not a snapshot image" "$T/err" || fail "$* said: $(cat "$T/err")"
}
restore_cmp() { # REPO AT REF [ARGS]
	_r=$1 _at=$2 _ref=$3; shift 3
	for _w in 1 4; do
		"$BACKUP" restore --repo "$_r" --at "$_at" --to "$T/out.img" --writers $_w --quiet "$@" >/dev/null 2>"$T/err" ||
			fail "restore --at $_at of $_r: $(cat "$T/err")"
		cmp "$T/out.img" "$_ref" || fail "backup $_at of $_r (writers $_w) differs from the image at its time"
	done
}

for mode in plain keyed; do
	R="$T/repo-$mode"
	K=; [ $mode = keyed ] && K="--key-file $T/key"
	# 0: full
	id=$(snap d "$T/diff.img")
	run b0 full --from "$IMG" --repo "$R" $K
	nbdcopy "$IMG" "$T/ref0.img"
	B snapshot_destroy -i "$id"
	[ "$(jfield "$T/b0.json" device)" = d ] || fail "$mode: the device is $(jfield "$T/b0.json" device), not d"
	# (the second round's device holds the first round's changes)
	want=$(jfield "$T/b0.json" bytes_read)
	[ $mode = keyed ] || [ "$want" = $((20 * MIB)) ] || fail "$mode: full read $want bytes, the data is 20 MiB"
	want=$((want - $(jfield "$T/b0.json" zero_blocks) * 65536))
	[ "$(jfield "$T/b0.json" new_bytes)" = $want ] || fail "$mode: full stored $(jfield "$T/b0.json" new_bytes) new bytes, not $want"

	# 1: incremental: a write, zeros, a discard, a write into a hole
	io d "write -P 0x11 $((3 * 65536 - 1000)) 3000"
	io d "write -z $((16 * 65536)) $((2 * 65536))"
	io d "write -P 0x22 $((800 * 65536 + 4096)) 512"
	id=$(snap d "$T/diff.img")
	run b1 incremental --from "$IMG" --repo "$R" $K
	nbdcopy "$IMG" "$T/ref1.img"
	B snapshot_destroy -i "$id"
	[ "$(jfield "$T/b1.json" kind)" = incremental ] || fail "$mode: backup 1 is not incremental"
	[ "$(jfield "$T/b1.json" blocks)" = 5 ] || fail "$mode: incremental read $(jfield "$T/b1.json" blocks) blocks, 5 changed"
	[ "$(jfield "$T/b1.json" parent)" = 0 ] || fail "$mode: incremental's parent is $(jfield "$T/b1.json" parent)"

	# 2: a second full of the unchanged device: nothing new
	id=$(snap d "$T/diff.img")
	run b2 full --from "$IMG" --repo "$R" $K
	B snapshot_destroy -i "$id"
	[ "$(jfield "$T/b2.json" new_chunks)" = 0 ] || fail "$mode: a full of an unchanged device stored $(jfield "$T/b2.json" new_chunks) chunks"

	# 3: device e, the same data as d at backup 0: nothing new either
	run b3 full --from "$(uri e)" --repo "$R" $K
	[ "$(jfield "$T/b3.json" device)" = e ] || fail "$mode: device e's backup is named $(jfield "$T/b3.json" device)"
	# (in the second round d has changed since e was copied from it: the
	# blocks of e in neither of d's images are new, the others are not)
	want=$($PY - "$T/e.img" "$T/ref0.img" "$T/ref1.img" <<'PYEOF'
import sys
def blocks(p):
    d = open(p, "rb").read()
    return {d[i:i + 65536] for i in range(0, len(d), 65536)}
have = blocks(sys.argv[2]) | blocks(sys.argv[3])
print(len({b for b in blocks(sys.argv[1]) if b.strip(b"\0") and b not in have}))
PYEOF
)
	[ $mode = keyed ] || [ "$want" = 0 ] || fail "plain: e differs from d's image"
	[ "$(jfield "$T/b3.json" new_chunks)" = "$want" ] || fail "$mode: e stored $(jfield "$T/b3.json" new_chunks) chunks, $want of its blocks are new"

	# 4: text compresses
	run b4 full --from "$(uri txt)" --repo "$R" $K
	stored=$(jfield "$T/b4.json" bytes_stored)
	[ "$stored" -le $((12 * MIB)) ] || fail "$mode: 24 MiB of text stored as $stored bytes"

	restore_cmp "$R" 0 "$T/ref0.img" $K
	restore_cmp "$R" 1 "$T/ref1.img" $K
	restore_cmp "$R" 2 "$T/ref1.img" $K
	restore_cmp "$R" 3 "$T/e.img" $K
	restore_cmp "$R" 4 "$T/txt.img" $K
	# without --at: the last backup, or with --device that device's last
	"$BACKUP" restore --repo "$R" --device e --to "$T/out.img" --quiet $K >/dev/null 2>"$T/err" || fail "restore --device e: $(cat "$T/err")"
	cmp "$T/out.img" "$T/e.img" || fail "$mode: restore --device e is not e's last backup"
	"$BACKUP" restore --repo "$R" --to "$T/out.img" --quiet $K >/dev/null 2>"$T/err" || fail "restore: $(cat "$T/err")"
	cmp "$T/out.img" "$T/txt.img" || fail "$mode: restore without --at is not the last backup"

	run v verify --repo "$R" --deep $K
	[ "$(jfield "$T/v.json" ok)" = True ] && [ "$(jfield "$T/v.json" restorable)" = 5 ] || fail "$mode: verify: $(cat "$T/v.json")"
	run i info --repo "$R" $K
	[ "$(jfield "$T/i.json" encrypted)" = "$([ $mode = keyed ] && echo True || echo False)" ] || fail "$mode: info: $(cat "$T/i.json")"
	$PY - "$T/i.json" <<'PYEOF' || fail "$mode: info's sizes: $(cat "$T/i.json")"
import json, sys
i = json.load(open(sys.argv[1]))
assert i["backups"] == 5, i
# d twice, e once (20 MiB each, plus the changes), txt 24 MiB: about 84 MiB;
# stored once: 20 MiB of random data and the text compressed
assert i["logical_bytes"] >= 84 << 20, i
assert i["unique_bytes"] < 46 << 20, i
assert i["stored_bytes"] < 34 << 20, i
assert i["dedup_ratio"] > 1.8, i
PYEOF
	run l list --repo "$R" $K
	$PY - "$T/l.json" <<'PYEOF' || fail "$mode: list: $(cat "$T/l.json")"
import json, sys
l = json.load(open(sys.argv[1]))
b = l["backups"]
assert [x["device"] for x in b] == ["d", "d", "d", "e", "txt"], b
assert [x["kind"] for x in b] == ["full", "incremental", "full", "full", "full"], b
assert l["version"] == 2
PYEOF
done

# The encrypted repository shows nothing of the data: no 4 KiB piece of
# the device is in any file of it, nor is the text.
R="$T/repo-keyed"
grep -rq "quick brown fox" "$R" && fail "the text is readable in the encrypted repository"
dd if="$T/d.img" bs=4096 skip=100 count=1 status=none >"$T/piece"
$PY - "$R" "$T/piece" <<'PYEOF' || fail "a piece of the device is in the encrypted repository"
import os, sys
piece = open(sys.argv[2], "rb").read()
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        assert piece not in open(os.path.join(d, f), "rb").read(), f
PYEOF
grep -q '"encryption"' "$R/repo.json" || fail "repo.json does not say it is encrypted"
bdf_stop
