#!/bin/bash
# The CBT across restarts (--state-dir): a clean stop saves the map with its
# generation and numbers, and the next start adopts it, so that the blocks
# written before the stop are changed in the map of the next take (and in the
# image's qemu:dirty-bitmap:G/1). After kill -9 the checkpoint and the
# write-intent log (a.wil) rebuild the map in the same generation. Every case
# it cannot prove gets a new generation: a missing or damaged log, a corrupted
# file, another capacity, other tracking parameters, a write before the
# tracker was attached, a run without the tracker that wrote the device
# (which removes the file before that write). Detach and device_remove
# remove the file. A bad --state-dir fails at start; a missing one is made.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-io nbdinfo

KiB=1024 MiB=$((1 << 20))
S="$T/state"        # missing: bdfilterd makes it
F="$S/a.cbt"
truncate -s 64M "$T/a.img"      # 1024 CBT blocks of 64 KiB
truncate -s 256M "$T/diff.img"

start() {
	rm -f "$SOCK" "$CTL"    # a killed daemon leaves them; wait_for_socket must see the new ones
	bdf_start --state-dir "$S" "$@"
}
gen() { B cbtinfo -d a | kv generation_id; }
changes() { B cbtinfo -d a | kv changes_number; }
W="$S/a.wil"
# flags: the header's flags byte (offset 12): 1 = CLEAN, 2 = LOGGED (a
# checkpoint, completed by the write-intent log)
flags() { od -A n -t u1 -j 12 -N 1 "$F" | tr -d ' '; }
logged() { grep -q -- "$1" "$BDF_LOG" || fail "the log does not say '$1'"; }
take() {
	id=$(B snapshot_create -d a | kv id)
	B snapshot_appendstorage -i "$id" -f "$T/diff.img" >/dev/null
	B snapshot_take -i "$id" >/dev/null
}

# --- a clean restart keeps the map --------------------------------------------------
start --device "a=$T/a.img,filter=tracker"
[ -d "$S" ] || fail "--state-dir was not made"
[ -f "$F" ] || fail "no $F while the tracker runs"
[ "$(flags)" = 2 ] || fail "$F is not a checkpoint (flags $(flags)) while the daemon runs"
[ -f "$W" ] || fail "no write-intent log $W while the tracker runs"
logged "a: no saved CBT in $F: new generation"
[ "$(B status | kv state_dir)" = "$S" ] || fail "status: state_dir"
# one daemon per state directory
rc=0; "$BDFILTERD" --foreground --control none --nbd-listen "unix:$T/other.sock" \
	--device "b=$T/diff.img,filter=tracker" --state-dir "$S" >"$T/out" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "a second daemon started on the same --state-dir"
grep -q "state-dir $S: in use by another bdfilterd" "$T/out" || fail "second daemon: $(cat "$T/out")"

[ "$(B cbtinfo -d a | kv wil_region_size)" = $((4 * MiB)) ] || fail "cbtinfo: wil_region_size"
[ "$(B cbtinfo -d a | kv wil_dirty)" = 0 ] || fail "cbtinfo: a region dirty before any write"
f0=$(B cbtinfo -d a | kv wil_flushes)
io a "write -P 0x11 0 64k"                      # block 0, before take 1
[ "$(B cbtinfo -d a | kv wil_dirty)" = 1 ] || fail "cbtinfo: wil_dirty after a write"
[ "$(B cbtinfo -d a | kv wil_flushes)" -gt "$f0" ] || fail "the first write to a region flushed no log"
take
[ "$(B cbtinfo -d a | kv wil_dirty)" = 0 ] || fail "cbtinfo: wil_dirty after the take's checkpoint"
B snapshot_destroy -i "$id"
[ "$(changes)" = 1 ] || fail "changes_number after the first take"
io a "write -P 0x22 $MiB 4k"                     # block 16
io a "write -P 0x33 $((10 * MiB + 100)) 200000"  # blocks 160..163
io a "write -z $((32 * MiB)) 64k"                # block 512
G=$(gen)
bdf_stop
[ -f "$F" ] || fail "no $F after a clean stop"
[ "$(flags)" = 1 ] || fail "$F not CLEAN after a clean stop"
[ "$(stat -c %s "$F")" = $((64 + 2 * 1024)) ] || fail "$F size $(stat -c %s "$F")"
[ ! -e "$F.tmp" ] || fail "$F.tmp left behind"

start --device "a=$T/a.img,filter=tracker"
logged "a: CBT loaded from $F, generation $G, changes_number 1"
[ "$(flags)" = 2 ] || fail "$F still CLEAN after the start: a crash would reuse it"
[ "$(gen)" = "$G" ] || fail "generation changed across a clean restart: $(gen), was $G"
[ "$(changes)" = 1 ] || fail "changes_number $(changes) after a clean restart"
take
[ "$(changes)" = 2 ] || fail "changes_number after the take after the restart"
B readcbtmap -d a -f "$T/map" >/dev/null
$PY - "$T/map" <<'PY' || fail "read map after the restart"
import sys
m = open(sys.argv[1], "rb").read()
want = {0: 1, 16: 2, 160: 2, 161: 2, 162: 2, 163: 2, 512: 2}
if len(m) != 1024:
    sys.exit("map of %d bytes" % len(m))
bad = [(i, m[i], want.get(i, 0)) for i in range(1024) if m[i] != want.get(i, 0)]
if bad:
    sys.exit("block, got, want: %s" % bad[:10])
PY
# the image's dirty bitmap since 1: exactly the blocks written after take 1, before the stop
nbdinfo --json --map="qemu:dirty-bitmap:$G/1" "$(uri a-image)" >"$T/bm" ||
	fail "no qemu:dirty-bitmap:$G/1 on the image after the restart"
$PY - "$T/bm" <<'PY' || fail "dirty bitmap after the restart"
import json, sys
runs = [(e["offset"], e["length"]) for e in json.load(open(sys.argv[1])) if e["type"] & 1]
B = 64 << 10
want = [(16 * B, B), (160 * B, 4 * B), (512 * B, B)]
if runs != want:
    sys.exit("dirty %s, want %s" % (runs, want))
PY
B snapshot_destroy -i "$id"

# --- kill -9: the checkpoint and the write-intent log, same generation --------------
G2=$(gen)
C2=$(changes)
io a "write -P 0x44 $((2 * MiB)) 4k"            # block 32, in the log's region 0 (4 MiB: blocks 0..63)
kill -KILL "$BDF_PID"; wait "$BDF_PID" 2>/dev/null || true; BDF_PID=
[ "$(flags)" = 2 ] || fail "$F not a checkpoint after kill -9"
start --device "a=$T/a.img,filter=tracker"
logged "a: CBT recovered after an unclean stop from the checkpoint in $F and 1 dirty regions of $W"
[ "$(gen)" = "$G2" ] || fail "kill -9 changed the generation: $(gen), was $G2"
[ "$(changes)" = "$C2" ] || fail "changes_number $(changes) after kill -9, was $C2"
take
B readcbtmap -d a -f "$T/map" >/dev/null
$PY - "$T/map" "$((C2 + 1))" <<'PY' || fail "read map after kill -9"
import sys
m, n = open(sys.argv[1], "rb").read(), int(sys.argv[2])
# the write's region (blocks 0..63) is changed in the take after the crash:
# a superset of the one block written, never less
if any(m[i] != n for i in range(0, 64)):
    sys.exit("blocks 0..63: %s, want %d" % (list(m[0:64]), n))
if [i for i in range(1024) if m[i] == n and not 0 <= i < 64]:
    sys.exit("more than the crashed write's region changed")
PY
B snapshot_destroy -i "$id"

# --- kill -9 with the log gone or damaged: new generation ----------------------------
G2=$(gen)
kill -KILL "$BDF_PID"; wait "$BDF_PID" 2>/dev/null || true; BDF_PID=
rm "$W"
start --device "a=$T/a.img,filter=tracker"
logged "CBT in $F not used after an unclean stop (the write-intent log $W: missing)"
[ "$(gen)" != "$G2" ] || fail "kill -9 without the log kept the generation"
[ "$(changes)" = 0 ] || fail "changes_number $(changes) in a new generation"
G2=$(gen)
kill -KILL "$BDF_PID"; wait "$BDF_PID" 2>/dev/null || true; BDF_PID=
printf 'XXXX' | dd of="$W" bs=1 conv=notrunc status=none
start --device "a=$T/a.img,filter=tracker"
logged "(the write-intent log $W: not a dirty log"
[ "$(gen)" != "$G2" ] || fail "kill -9 with a damaged log kept the generation"
# a file from an older version, not clean and not a checkpoint
G2=$(gen)
bdf_stop
printf '\x00' | dd of="$F" bs=1 seek=12 conv=notrunc status=none
$PY - "$F" <<'PY'
import sys, zlib
b = bytearray(open(sys.argv[1], "rb").read())
b[60:64] = (zlib.crc32(b[64:], zlib.crc32(b[:60])) & 0xffffffff).to_bytes(4, "little")
open(sys.argv[1], "wb").write(b)
PY
start --device "a=$T/a.img,filter=tracker"
logged "not clean: the daemon did not stop cleanly"
[ "$(gen)" != "$G2" ] || fail "a file neither clean nor a checkpoint kept the generation"

# --- a corrupted file: checksum -------------------------------------------------------
G3=$(gen)
bdf_stop
[ "$(flags)" = 1 ] || fail "not CLEAN after a clean stop"
printf '\x07' | dd of="$F" bs=1 seek=$((64 + 100)) conv=notrunc status=none
start --device "a=$T/a.img,filter=tracker"
logged "checksum mismatch"
[ "$(gen)" != "$G3" ] || fail "a corrupted file kept the generation"

# --- the device's capacity changed while stopped ---------------------------------------
G4=$(gen)
bdf_stop
truncate -s 32M "$T/a.img"
start --device "a=$T/a.img,filter=tracker"
logged "the device's capacity changed"
[ "$(gen)" != "$G4" ] || fail "a capacity change kept the generation"
[ "$(B cbtinfo -d a | kv device_capacity)" = $((32 * MiB)) ] || fail "capacity after the change"

# --- other tracking parameters -----------------------------------------------------------
G5=$(gen)
bdf_stop
start --device "a=$T/a.img,filter=tracker" --param tracking_block_minimum_shift=17
logged "the block geometry changed"
[ "$(gen)" != "$G5" ] || fail "a geometry change kept the generation"
[ "$(B cbtinfo -d a | kv block_size)" = $((128 * KiB)) ] || fail "block size with shift 17"
G6=$(gen)
bdf_stop
start --device "a=$T/a.img,filter=tracker" --param tracking_block_minimum_shift=17
logged "CBT loaded from $F, generation $G6"
# a stop with a snapshot still taken: destroyed first, then the map saved
take
c=$(changes)
io a "write -P 0x77 $((3 * MiB)) 4k"
bdf_stop
start --device "a=$T/a.img,filter=tracker" --param tracking_block_minimum_shift=17
logged "CBT loaded from $F, generation $G6, changes_number $c"

# --- detach: the file goes --------------------------------------------------------------
B detach -d a >/dev/null
[ ! -e "$F" ] || fail "$F survived a detach"
[ ! -e "$W" ] || fail "$W survived a detach"
io a "write -P 0x55 0 4k"                        # untracked
bdf_stop
[ ! -e "$F" ] || fail "$F came back at the stop after a detach"

# --- a live attach adopts a clean map, unless the device was written before ------------------
start --device "a=$T/a.img,filter=tracker"
logged "no saved CBT"
G7=$(gen)
bdf_stop
start --device "a=$T/a.img"                       # no tracker at start
B attach -d a >/dev/null
logged "CBT loaded from $F, generation $G7"
bdf_stop
start --device "a=$T/a.img"
io a "write -P 0x66 0 4k"                        # before the tracker: not in the saved map
B attach -d a >/dev/null
logged "written before the tracker was attached"
[ "$(gen)" != "$G7" ] || fail "a write before the attach kept the generation"

# --- a run with no tracker that writes makes the saved map stale, even if killed ----------------
G8=$(gen)
bdf_stop                                         # saved CLEAN, generation G8
start --device "a=$T/a.img"                       # no tracker
[ -f "$F" ] || fail "a start without writes removed $F"
io a "write -P 0x77 1M 4k"                       # nothing tracks this
[ ! -e "$F" ] || fail "a write with no tracker left $F, which would load as clean"
logged "written with no tracker attached"
kill -KILL "$BDF_PID"; wait "$BDF_PID" 2>/dev/null || true; BDF_PID=
start --device "a=$T/a.img,filter=tracker"
[ "$(gen)" != "$G8" ] || fail "the map saved before an untracked write was loaded after a restart"
G9=$(gen)
bdf_stop
start --device "a=$T/a.img"                       # no tracker, no write: the map stays
bdf_stop
start --device "a=$T/a.img,filter=tracker"
[ "$(gen)" = "$G9" ] || fail "a run with no tracker and no write lost the map"

# --- device_remove: the file goes at once, though a client holds the device --------------------
$PY -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"
$PY -c '
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("connected", flush=True)
time.sleep(60)
' "$(uri a)" >"$T/holder" 2>/dev/null &
holder=$!
for _ in $(seq 100); do grep -q connected "$T/holder" && break; sleep 0.05; done
grep -q connected "$T/holder" || fail "the holding client did not connect"
B device_remove -d a >/dev/null
[ ! -e "$F" ] || fail "$F survived device_remove"
bdf_stop                                         # the held device closes only now
kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
[ ! -e "$F" ] || fail "$F saved at the stop after device_remove"
grep -q "a: CBT saved" "$BDF_LOG" && fail "a removed device's CBT was saved at the stop"

# --- a bad --state-dir fails at start, with one clear message --------------------------------
: >"$T/plain"
rc=0; "$BDFILTERD" --foreground --control none --nbd-listen "unix:$SOCK" --device "a=$T/a.img,filter=tracker" \
	--state-dir "$T/plain" >"$T/out" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "--state-dir on a regular file started"
grep -q "state-dir $T/plain: not a directory" "$T/out" || fail "--state-dir file: $(cat "$T/out")"
rc=0; "$BDFILTERD" --foreground --control none --nbd-listen "unix:$SOCK" --device "a=$T/a.img,filter=tracker" \
	--state-dir "$T/no/such" >"$T/out" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "--state-dir under a missing directory started"
grep -q "state-dir $T/no/such: cannot make it" "$T/out" || fail "--state-dir missing parent: $(cat "$T/out")"
rc=0; "$BDFILTERD" --foreground --state-dir "" --device "a=$T/a.img" >"$T/out" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "--state-dir '' accepted"
exit 0
