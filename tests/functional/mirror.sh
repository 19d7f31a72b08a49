#!/bin/bash
# The mirror filter: a live move of a device to new storage.
#  - fio with verify writes the device during the whole resync; when it is
#    done the two legs are byte for byte the same (qemu-img compare);
#  - fio with verify writes across mirror_switch: no write is lost, and the
#    device is then the target (qemu-img compare of the export and the file);
#  - with a tracker and a snapshot on the device, the image stays the instant's;
#  - kill -9 in the middle of the resync: the next start resumes from the
#    mirror's log, its progress at least what it was;
#  - a target that fails half way (a file on a full tmpfs): the mirror fails,
#    the device does not;
#  - every bad request: one clear error, nothing changed.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need fio qemu-img qemu-io

MiB=$((1 << 20))
S="$T/state"
mkimage "$T/src.img" 32
truncate -s 32M "$T/tgt.img"
truncate -s 256M "$T/diff.img"

start() {
	rm -f "$SOCK" "$CTL"
	bdf_start --state-dir "$S" --device "d=$T/src.img,filter=tracker" "$@"
	wait_for_socket "$CTL"
}
state() { B mirror_status -d d | kv state; }
in_sync() { B mirror_status -d d | kv in_sync; }
# until_state STATE: poll the status (at most 120 s; the poll decides nothing
# but how long to wait)
until_state() {
	for _ in $(seq 2400); do
		[ "$(state)" = "$1" ] && return 0
		[ "$(state)" = failed ] && [ "$1" != failed ] && fail "the mirror failed: $(B mirror_status -d d | tr '\n' ' ')"
		sleep 0.05
	done
	fail "the mirror did not reach $1: $(B mirror_status -d d | tr '\n' ' ')"
}
# fio_verify NAME SIZE-MiB [options]: random 4 KiB writes over the device, each
# block with a checksum, then everything read back and checked
fio_verify() {
	local name=$1 size=$2
	shift 2
	fio --name="$name" --ioengine=nbd --uri="$(uri d)" --rw=randwrite --bs=4k --iodepth=16 \
		--size="${size}M" --verify=crc32c --verify_fatal=1 --do_verify=1 --randseed="$RANDOM" \
		"$@" --output="$T/$name.out" >/dev/null 2>&1 || fail "fio $name: $(tail -20 "$T/$name.out")"
}

# --- bad requests -----------------------------------------------------------------
start
truncate -s 16M "$T/small.img"
expect ENOENT mirror_status -d d
expect ENOENT mirror_switch -d d
expect ENOENT mirror_stop -d d
expect ENODEV mirror_start -d nope -f "$T/tgt.img"
expect EINVAL mirror_start -d d -f tgt.img
expect ENOSPC mirror_start -d d -f "$T/small.img"
expect ENOENT mirror_start -d d -f "$T/missing.img"
expect EBUSY mirror_start -d d -f "$T/src.img"
expect EINVAL mirror_start -d d -f "$T/tgt.img" --region-size 1000
expect EINVAL mirror_start -d d -f "$T/tgt.img" --region-size 4096
B device_add -d other -f "$T/small.img" >/dev/null
truncate -s 32M "$T/small.img"
B device_resize -d other >/dev/null
expect EBUSY mirror_start -d d -f "$T/small.img"            # another device's store
B device_remove -d other >/dev/null
B device_add -d ro -f "$T/small.img" --ro >/dev/null
expect EPERM mirror_start -d ro -f "$T/tgt.img"
B device_remove -d ro >/dev/null
[ -z "$(ls "$S" | grep mirror || true)" ] || fail "a refused mirror_start left files: $(ls "$S")"

# --- fio with verify during the resync; the legs the same at the end ----------------
# 32 MiB at 8 MiB/s: about 4 s of resync, fio writing all along
B mirror_start -d d -f "$T/tgt.img" --rate 8M >/dev/null
expect EBUSY mirror_start -d d -f "$T/small.img"
[ "$(state)" = syncing ] || fail "state $(state) right after mirror_start"
expect EBUSY mirror_switch -d d
# and, at once, writes as fast as they go on the last 4 MiB, which the resync
# copies last (from about 3.5 s on), so that its copies of those regions meet
# writes all along (the copy must bar them)
fio --name=hot --ioengine=nbd --uri="$(uri d)" --rw=randwrite --bs=4k --iodepth=16 --offset=28M --size=4M \
	--time_based --runtime=6 --output="$T/hot.out" >/dev/null 2>&1 &
hot_pid=$!
fio_verify during 28 --rate_iops=1500
wait "$hot_pid" || fail "fio hot: $(tail -20 "$T/hot.out")"
until_state synced
# in_sync counts what the log has clean on disk: the last writes' regions
# are cleared within a second of the writes
for _ in $(seq 400); do [ "$(in_sync)" = 32 ] && break; sleep 0.05; done
[ "$(in_sync)" = 32 ] || fail "in_sync $(in_sync) when synced"
qemu-img compare -q -f raw -F raw "$T/src.img" "$T/tgt.img" || fail "the legs differ after the resync"
expect EBUSY device_add -d other -f "$T/tgt.img"             # the target is claimed
copied=$(B mirror_status -d d | kv copied)
[ "$copied" -ge $((32 * MiB)) ] || fail "copied $copied bytes"

# --- a snapshot on the device meanwhile: its image is the instant's ------------------
id=$(snap d "$T/diff.img")
qemu-img convert -f raw -O raw "$(uri d-image)" "$T/at-take.img"
io d "write -P 0x5a 0 1M"

# --- fio with verify across the switch ----------------------------------------------
fio --name=across --ioengine=nbd --uri="$(uri d)" --rw=randwrite --bs=4k --iodepth=16 --size=32M \
	--verify=crc32c --verify_fatal=1 --do_verify=1 --rate_iops=1000 --output="$T/across.out" \
	>/dev/null 2>&1 &
fio_pid=$!
sleep 1 # into fio's 8 s of writes; the note below says whether the switch came during them
B mirror_switch -d d >"$T/switch.out" || fail "mirror_switch: $(cat "$T/switch.out")"
kill -0 "$fio_pid" 2>/dev/null && note "the switch came while fio was writing" ||
	note "fio ended before the switch: this run did not cover a switch under writes"
wait "$fio_pid" || fail "fio across the switch: $(tail -20 "$T/across.out")"
[ "$(kv path <"$T/switch.out")" = "$T/tgt.img" ] || fail "mirror_switch printed $(cat "$T/switch.out")"
[ "$(state)" = switched ] || fail "state $(state) after the switch"
B device_list | grep -qx "path=$T/tgt.img" || fail "device_list: $(B device_list)"
qemu-img compare -q -f raw -F raw "$(uri d)" "$T/tgt.img" || fail "the device is not its new store"
qemu-img compare -q -f raw -F raw "$(uri d-image)" "$T/at-take.img" || fail "the image changed across the move"
B snapshot_destroy -i "$id"
expect EALREADY mirror_switch -d d
fio_verify after 32
B mirror_stop -d d >/dev/null
expect ENOENT mirror_status -d d
expect EBUSY device_add -d other -f "$T/tgt.img"             # the device's store now
[ -z "$(ls "$S" | grep mirror || true)" ] || fail "files left after the switch: $(ls "$S")"
bdf_stop

# --- kill -9 in the middle of the resync: resumed from the log ----------------------
mkimage "$T/src.img" 64
rm -f "$T/tgt.img"; truncate -s 64M "$T/tgt.img"
start
B mirror_start -d d -f "$T/tgt.img" --rate 16M >/dev/null
for _ in $(seq 2400); do [ "$(in_sync)" -ge 16 ] && break; sleep 0.05; done
before=$(in_sync)
[ "$before" -ge 16 ] || fail "the resync made no progress: $(B mirror_status -d d | tr '\n' ' ')"
kill -KILL "$BDF_PID"; wait "$BDF_PID" 2>/dev/null || true; BDF_PID=
[ -f "$S/d.mirror" ] && [ -f "$S/d.mirror-log" ] || fail "no mirror state after kill -9: $(ls "$S")"
start
grep -q "d: mirroring to $T/tgt.img, 64 regions of 1048576 bytes, [0-9]* in sync (resumed from the log)" "$BDF_LOG" ||
	fail "the mirror was not resumed"
after=$(grep -o '[0-9]* in sync (resumed' "$BDF_LOG" | cut -d' ' -f1)
[ "$after" -ge "$before" ] || fail "resumed with $after regions in sync, $before before kill -9"
until_state synced
qemu-img compare -q -f raw -F raw "$T/src.img" "$T/tgt.img" || fail "the legs differ after the resumed resync"
B mirror_stop -d d >/dev/null
[ ! -e "$S/d.mirror" ] || fail "d.mirror left after mirror_stop"
bdf_stop

# --- a target that fails half way -------------------------------------------------------
if [ "$(id -u)" != 0 ]; then
	note "not root: the failing target (a full tmpfs) is not tested"
	exit 0
fi
mkdir "$T/full"
mount -t tmpfs -o size=24M tmpfs "$T/full" || { note "cannot mount a tmpfs: the failing target is not tested"; exit 0; }
trap 'umount "$T/full" 2>/dev/null; _bdf_cleanup' EXIT
truncate -s 64M "$T/full/tgt.img"
start
B mirror_start -d d -f "$T/full/tgt.img" >/dev/null
until_state failed
B mirror_status -d d | grep -q '^error=No space left on device' || fail "status: $(B mirror_status -d d)"
io d "write -P 0x33 $((40 * MiB)) 1M"
io d "read -P 0x33 $((40 * MiB)) 1M"
expect EIO mirror_switch -d d
B mirror_stop -d d >/dev/null
io d "read -P 0x33 $((40 * MiB)) 1M"
bdf_stop
