#!/bin/bash
# Snapshots through the CLI: the blksnap command set and its errors, images
# that read what the origin held at take (and take writes without touching the
# origin), chunk boundaries, the CBT after takes, events, overflow, the 255-take
# wrap, two snapshots at once, destroy under I/O.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-img qemu-io nbdcopy

MIB=$((1 << 20))
mkimage "$T/a.img" 64
mkimage "$T/b.img" 16
truncate -s 256M "$T/diff1.img"
truncate -s 1M "$T/small.img"
# 64 KiB steps of low_free_space, so that events come often enough to see
bdf_start --device "a=$T/a.img" --device "b=$T/b.img" --param diff_storage_minimum=128

# errors before anything exists
expect EINVAL snapshot_take -i not-a-uuid
expect ESRCH snapshot_take -i 00000000-0000-0000-0000-000000000000
expect ENOENT snapshot_create -d a                 # no tracker yet
B attach -d a
B attach -d b
expect ENODEV snapshot_create -d nosuch

id=$(B snapshot_create -d a | kv id)
[ -n "$id" ] || fail "snapshot_create printed no id"
expect EBUSY snapshot_create -d a                  # a device is in one snapshot at most
expect EBUSY detach -d a
expect EBUSY device_remove -d a
ev=$(B snapshot_waitevent -i "$id" -t 1000)
[ "$(kv event <<<"$ev")" = low_free_space ] && [ "$(kv requested_nr_sect <<<"$ev")" = 128 ] ||
	fail "first low_free_space event: $ev"
[ "$(B snapshot_waitevent -i "$id" -t 50 | kv result)" = timeout ] || fail "waitevent timeout"
empty=$(B snapshot_create | kv id)
expect ENODEV snapshot_take -i "$empty"                 # an empty snapshot cannot be taken
B snapshot_destroy -i "$empty"
B snapshot_appendstorage -i "$id" -f "$T/diff1.img" -r 0:65536 -r 131072:65536
expect EINVAL snapshot_appendstorage -i "$id" -f "$T/diff1.img" -r 524287:2
expect ENOENT snapshot_appendstorage -i "$id" -f "$T/missing.img"
[ "$(B snapshot_info -d a | kv image)" = "" ] || fail "image before take"

cp "$T/a.img" "$T/a.at-take"
B snapshot_take -i "$id"
expect EALREADY snapshot_take -i "$id"
expect EALREADY snapshot_add -i "$id" -d b
info=$(B snapshot_info -d a)
[ "$(kv image <<<"$info")" = a-image ] && [ "$(kv error_code <<<"$info")" = 0 ] || fail "snapshot_info: $info"
[ "$(B cbtinfo -d a | kv changes_number)" = 1 ] || fail "changes_number after the first take"

# writes on the origin: at chunk boundaries (256 KiB), unaligned, across two chunks
io a "write -P 0x11 0 512"
io a "write -P 0x22 262143 2"
io a "write -P 0x33 $((3 * 262144 - 1000)) 5000"
io a "write -P 0x44 $((10 * MIB)) $((4 * MIB))"
io a "write -z $((20 * MIB)) $((MIB))"
io a "discard $((30 * MIB)) $((MIB))"
qemu-img compare -f raw -F raw "$T/a.at-take" "$(uri a-image)" >/dev/null || fail "image differs from the origin at take"
io a "read -P 0x22 262143 2"
io a-image "read -P 0 0 0" 2>/dev/null || true

# image writes go to the storage, never to the origin; unaligned ones too
cp "$T/a.at-take" "$T/a.image-expect"
io a-image "write -P 0x77 1000 3000"
io a-image "write -P 0x78 $((5 * 262144 - 7)) 14"
io a-image "read -P 0x77 1000 3000"
io a-image "read -P 0x78 $((5 * 262144 - 7)) 14"
$PY - "$T/a.image-expect" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(1000); f.write(b"\x77" * 3000)
    f.seek(5 * 262144 - 7); f.write(b"\x78" * 14)
PY
qemu-img compare -f raw -F raw "$T/a.image-expect" "$(uri a-image)" >/dev/null || fail "image after image writes"
io a "read -P 0x11 0 512"   # the origin kept its own data

# the CBT of the next take shows the changed blocks (64 KiB each)
B snapshot_destroy -i "$id"
nbdinfo --size "$(uri a-image)" 2>/dev/null && fail "image export outlived its snapshot"
id2=$(B snapshot_create -d a | kv id)
B snapshot_appendstorage -i "$id2" -f "$T/diff1.img" -r 262144:131072
B snapshot_take -i "$id2"
[ "$(B cbtinfo -d a | kv changes_number)" = 2 ] || fail "changes_number after the second take"
B readcbtmap -d a -f "$T/map" >/dev/null
$PY - "$T/map" <<'PY' || fail "CBT after the second take"
import sys
m = open(sys.argv[1], "rb").read()
K = 65536
changed = {i for i, v in enumerate(m) if v > 1}
want = set()
def mark(off, n):
    want.update(range(off // K, (off + n - 1) // K + 1))
M = 1 << 20
mark(0, 512); mark(262143, 2); mark(3 * 262144 - 1000, 5000)
mark(10 * M, 4 * M); mark(20 * M, M); mark(30 * M, M)
mark(1000, 3000); mark(5 * 262144 - 7, 14)       # image writes mark the CBT too
assert changed == want, "changed %s, want %s" % (sorted(changed - want), sorted(want - changed))
assert all(v in (0, 1, 2) for v in m), "values %s" % set(m)
PY

# overflow: a tiny storage, then more writes than it holds
B snapshot_destroy -i "$id2"
cp "$T/a.img" "$T/a.before-overflow"
id3=$(B snapshot_create -d a | kv id)
B snapshot_waitevent -i "$id3" -t 1000 >/dev/null
B snapshot_appendstorage -i "$id3" -f "$T/small.img"
B snapshot_take -i "$id3"
io a "write -P 0x99 0 $((8 * MIB))"
ev=""
for _ in $(seq 20); do
	ev=$(B snapshot_waitevent -i "$id3" -t 500)
	[ "$(kv event <<<"$ev")" = corrupted ] && break
done
[ "$(kv event <<<"$ev")" = corrupted ] && [ "$(kv err_code <<<"$ev")" = -28 ] || fail "corrupted event: $ev"
[ "$(B snapshot_info -d a | kv error_code)" = -28 ] || fail "error_code after overflow"
qemu-io -f raw "$(uri a-image)" -c 'read 0 4096' 2>&1 | grep -qi "error" || fail "image read after overflow did not fail"
$PY - "$T/a.before-overflow" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.write(b"\x99" * (8 << 20))
PY
qemu-img compare -f raw -F raw "$T/a.before-overflow" "$(uri a)" >/dev/null || fail "origin after overflow"
io a "write -P 0x9a $((40 * MIB)) 4096"   # the origin keeps working
B snapshot_destroy -i "$id3"

# two snapshots at once, on disjoint devices
s1=$(B snapshot_create -d a | kv id); s2=$(B snapshot_create -d b | kv id)
B snapshot_appendstorage -i "$s1" -f "$T/diff1.img" -r 0:65536
B snapshot_appendstorage -i "$s2" -f "$T/diff1.img" -r 65536:65536
cp "$T/b.img" "$T/b.at-take"
B snapshot_take -i "$s2"
B snapshot_take -i "$s1"
[ "$(B snapshot_collect | kv id | sort | tr '\n' ' ')" = "$(printf '%s\n' "$s1" "$s2" | sort | tr '\n' ' ')" ] ||
	fail "snapshot_collect"
io b "write -P 0x5b 0 $((2 * MIB))"
qemu-img compare -f raw -F raw "$T/b.at-take" "$(uri b-image)" >/dev/null || fail "second snapshot's image"

# destroy while the image is being read: the reader fails cleanly, the daemon lives
nbdcopy --connections=2 "$(uri a-image)" "$T/copy.img" 2>/dev/null &
copy=$!
B snapshot_destroy -i "$s1"
wait $copy || note "nbdcopy of a destroyed image failed, as it may"
B snapshot_destroy -i "$s2"
[ -z "$(B snapshot_collect)" ] || fail "snapshots left"
bdf_alive

# self-growing storage: a file grown in diff_storage_minimum steps (64 KiB
# here) up to its limit, the event only at the limit; then a directory
s=$(B snapshot_create -d a -f "$T/grow.img" -l 1M | kv id)
B snapshot_watcher -i "$s" >"$T/watch" &
watcher=$!
[ "$(stat -c %s "$T/grow.img")" = 65536 ] || fail "first growth step: $(stat -c %s "$T/grow.img")"
B snapshot_take -i "$s"
io a "write -P 0x61 0 $((512 * 1024))"          # two chunks: 512 KiB
size=$(stat -c %s "$T/grow.img")
[ "$size" -ge $((512 * 1024)) ] && [ "$size" -le $((1024 * 1024)) ] || fail "grown to $size"
[ "$(B snapshot_info -d a | kv error_code)" = 0 ] || fail "growing storage overflowed early"
io a "write -P 0x62 $((MIB)) $((2 * MIB))"       # past the 1 MiB limit
[ "$(stat -c %s "$T/grow.img")" = $((1024 * 1024)) ] || fail "grew past its limit"
[ "$(B snapshot_info -d a | kv error_code)" = -28 ] || fail "no overflow at the limit"
B snapshot_destroy -i "$s"
wait $watcher || fail "snapshot_watcher did not end with its snapshot"
grep -q "^event=low_free_space" "$T/watch" || fail "no low_free_space event at the limit: $(cat "$T/watch")"
grep -q "^event=corrupted" "$T/watch" || fail "watcher missed the corrupted event: $(cat "$T/watch")"
s=$(B snapshot_create -d a -f "$T" -l 4M | kv id)
B snapshot_take -i "$s"
io a "write -P 0x63 0 $((MIB))"
[ "$(B snapshot_info -d a | kv error_code)" = 0 ] || fail "temporary growing storage"
[ "$(B snapshot_info -d a | kv storage_capacity)" -ge $((MIB)) ] || fail "temporary storage did not grow"
B snapshot_destroy -i "$s"
expect EINVAL snapshot_create -d a -f "$T/x.img"        # -f needs -l
expect ENOENT snapshot_create -d a -f /nonexistent/dir/x -l 1M

# the 255 wrap: a new generation, whose first take is number 1
gen=$(B cbtinfo -d b | kv generation_id)
n=$(B cbtinfo -d b | kv changes_number)
# (on the control socket itself: 1000 CLI runs take minutes under ASan)
$PY - "$CTL" "$T/diff1.img" $((254 - n)) <<'PY' || fail "takes up to the wrap"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rwb")
def call(command, **args):
    f.write(json.dumps({"command": command, "args": args}).encode() + b"\n")
    f.flush()
    r = json.loads(f.readline())
    assert r["ok"], (command, r)
    return r.get("result", {})
for _ in range(int(sys.argv[3])):
    sid = call("snapshot_create", device=["b"])["id"]
    call("snapshot_appendstorage", id=sid, file=sys.argv[2], ranges=[[0, 2048]])
    call("snapshot_take", id=sid, **{"no-freeze": True})
    call("snapshot_destroy", id=sid)
PY
info=$(B cbtinfo -d b)
[ "$(kv changes_number <<<"$info")" = 254 ] && [ "$(kv generation_id <<<"$info")" = "$gen" ] ||
	fail "before the wrap: $info"
s=$(B snapshot_create -d b | kv id)
B snapshot_appendstorage -i "$s" -f "$T/diff1.img" -r 0:2048
B snapshot_take -i "$s"
B snapshot_destroy -i "$s"
info=$(B cbtinfo -d b)
[ "$(kv generation_id <<<"$info")" != "$gen" ] || fail "no new generation at the 255th take: $info"
[ "$(kv changes_number <<<"$info")" = 1 ] || fail "the first take of a generation is not number 1: $info"
note "after the wrap: $(tr '\n' ' ' <<<"$info")"

# a client waiting for events does not hold the daemon's shutdown
s=$(B snapshot_create -d b | kv id)
B snapshot_waitevent -i "$s" >/dev/null
B snapshot_waitevent -i "$s" -t 600000 >/dev/null 2>&1 &
sleep 0.3
start=$(date +%s%N)
bdf_stop
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$ms" -lt 5000 ] || fail "shutdown took $ms ms with a client waiting for events"
