#!/bin/bash
# nbdinfo: --list, --size, --can/--is, --map on sparse files (small and 20 GiB), --json.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo

mkimage "$T/a.img" 8
truncate -s 64M "$T/sparse.img"
dd if=/dev/urandom of="$T/sparse.img" bs=1M seek=4 count=2 conv=notrunc status=none
dd if=/dev/urandom of="$T/sparse.img" bs=1M seek=32 count=1 conv=notrunc status=none
truncate -s 20G "$T/huge.img"
for g in 1 7 19; do dd if=/dev/urandom of="$T/huge.img" bs=1M seek=$((g * 1024)) count=1 conv=notrunc status=none; done
cp "$T/a.img" "$T/ro.img"
bdf_start --device "a=$T/a.img" --device "sparse=$T/sparse.img" --device "huge=$T/huge.img" \
	--device "ro=$T/ro.img,ro"

list=$(nbdinfo --list --json "nbd+unix://?socket=$SOCK")
names=$($PY -c 'import json,sys; print(" ".join(e["export-name"] for e in json.load(sys.stdin)["exports"]))' <<<"$list")
[ "$names" = "a sparse huge ro" ] || fail "nbdinfo --list: $names"
nbdinfo --list "nbd+unix://?socket=$SOCK" >"$T/list.txt" || fail "nbdinfo --list"
for n in a sparse huge ro; do
	grep -q "^export=\"$n\":" "$T/list.txt" || fail "nbdinfo --list does not show $n: $(cat "$T/list.txt")"
done
# the list carries each export's size
$PY -c '
import json, sys
want = {"a": 8 << 20, "sparse": 64 << 20, "huge": 20 << 30, "ro": 8 << 20}
got = {e["export-name"]: e["export-size"] for e in json.load(sys.stdin)["exports"]}
assert got == want, got
' <<<"$list" || fail "nbdinfo --list --json sizes"
# export "" is the first device
[ "$(nbdinfo --size "nbd+unix:///?socket=$SOCK")" = $((8 << 20)) ] || fail "--size of the default export"
rc=0; nbdinfo --size "$(uri nosuch)" >/dev/null 2>"$T/err" || rc=$?
[ $rc -ne 0 ] || fail "nbdinfo on an unknown export succeeded"

[ "$(nbdinfo --size "$(uri sparse)")" = $((64 << 20)) ] || fail "--size"
[ "$(nbdinfo --size "$(uri huge)")" = $((20 << 30)) ] || fail "--size 20G"

for f in flush fua trim zero fast-zero cache multi-conn df; do
	nbdinfo --can "$f" "$(uri a)" || fail "--can $f on a rw export"
done
# nbdinfo --can/--is: exit 0 for true, 2 for false (1 is an error)
answer() { rc=0; nbdinfo "$@" || rc=$?; echo $rc; }
[ "$(answer --can write "$(uri a)")" = 0 ] || fail "--can write on rw"
[ "$(answer --can write "$(uri ro)")" = 2 ] || fail "--can write on ro"
[ "$(answer --is read-only "$(uri ro)")" = 0 ] || fail "--is read-only"
[ "$(answer --is read-only "$(uri a)")" = 2 ] || fail "--is read-only on rw"
[ "$(answer --can trim "$(uri ro)")" = 2 ] || fail "--can trim on ro"
[ "$(answer --can zero "$(uri ro)")" = 2 ] || fail "--can zero on ro"
[ "$(answer --can fast-zero "$(uri ro)")" = 2 ] || fail "--can fast-zero on ro"
for f in flush fua cache multi-conn; do
	[ "$(answer --can "$f" "$(uri ro)")" = 0 ] || fail "--can $f on ro"
done
[ "$(answer --is rotational "$(uri a)")" = 2 ] || fail "--is rotational"

map=$(nbdinfo --map --json "$(uri sparse)")
got=$($PY -c '
import json, sys
print(" ".join("%d:%d:%d" % (e["offset"], e["length"], e["type"]) for e in json.load(sys.stdin)))' <<<"$map")
M=$((1 << 20))
want="0:$((4 * M)):3 $((4 * M)):$((2 * M)):0 $((6 * M)):$((26 * M)):3 $((32 * M)):$M:0 $((33 * M)):$((31 * M)):3"
[ "$got" = "$want" ] || fail "--map: got [$got] want [$want]"

start=$(date +%s%N)
timeout 60 nbdinfo --map --json "$(uri huge)" >"$T/map.json" || fail "--map on 20 GiB timed out or failed"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
$PY - "$((20 << 30))" "$T/map.json" <<'PY' || fail "--map on 20 GiB"
import json, sys
ext = json.load(open(sys.argv[2]))
total = sum(e["length"] for e in ext)
data = [(e["offset"] >> 30, e["length"]) for e in ext if e["type"] == 0]
assert total == int(sys.argv[1]), "map covers %d bytes" % total
assert data == [(1, 1 << 20), (7, 1 << 20), (19, 1 << 20)], "data extents %r" % data
PY
note "nbdinfo --map of a 20 GiB sparse export: ${ms} ms"

json=$(nbdinfo --json "$(uri a)")
$PY -c 'import json,sys; e=json.load(sys.stdin)["exports"][0]; assert e["export-size"]==8<<20 and e["can_multi_conn"]' <<<"$json" ||
	fail "nbdinfo --json"
bdf_alive
