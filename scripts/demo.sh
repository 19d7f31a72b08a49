#!/bin/bash
# make demo: the main job end to end on a generated disk image.
#
# bdfilterd serves a 512 MiB disk with the tracker attached. Through its FUSE
# file and a loop device, ext4 is made and mounted and files are written (an
# md5 list beside them). A snapshot is taken with the filesystem frozen, and
# bdfilter-backup pulls a full backup from the snapshot image. More files are
# written and some changed; a second snapshot, and an incremental backup that
# reads only the blocks the CBT says changed. Both points are restored and
# checked: byte for byte against copies of the images made with nbdcopy at the
# time, and by mounting each restored filesystem and checking its md5 list.
#
# Then the one-command way: two rounds of `bdfilter-backup run --keep-last 2`
# (snapshot, incremental, snapshot destroyed, prune), the repository's sizes
# (`info`: what dedup and zstd saved), and an instant restore of the last
# point: `serve` as a read-only NBD export (read by nbdcopy, compared with a
# restore) and `mount` as a FUSE file that losetup and mount read (its md5
# list checked) without copying the image out.
#
# Without /dev/fuse, a free loop device or mkfs.ext4, the same runs on raw
# data written through NBD with qemu-io, and says so (DEMO_RAW=1 asks for it).
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
bdfilterd="$build/bdfilterd"
bdfilter="$build/bdfilter"
backup="$build/bdfilter-backup"
export PATH="/usr/bin:$PATH"
work=$(mktemp -d /tmp/bdfilter-demo.XXXXXX)
pid=
mounts=()
loops=()

cleanup() {
	local rc=$? m l
	set +e
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null
		timeout 20 tail --pid="$pid" -f /dev/null
	fi
	grep -q " $work/fuse " /proc/self/mountinfo && umount -l "$work/fuse"
	[ $rc -ne 0 ] && [ -f "$work/log" ] && { echo "bdfilterd's log:"; sed 's/^/  /' "$work/log"; }
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
B() { "$bdfilter" --control "$work/control.sock" "$@"; }
kv() { sed -n "s/^$1=//p"; }

mode=ext4
if [ -n "${DEMO_RAW:-}" ]; then mode="raw: DEMO_RAW is set"
elif [ ! -c /dev/fuse ]; then mode="raw: /dev/fuse is not available"
elif ! losetup -f >/dev/null 2>&1; then mode="raw: no free loop device"
elif ! command -v mkfs.ext4 >/dev/null; then mode="raw: mkfs.ext4 is not installed"
fi

step "a 512 MiB disk image, served by bdfilterd with the tracker attached"
img="$work/disk.img"
truncate -s 512M "$img"
truncate -s 1G "$work/diff.img"
mkdir "$work/fuse"
fuse_opt=()
[ "$mode" = ext4 ] && fuse_opt=(--fuse-dir "$work/fuse")
"$bdfilterd" --foreground --nbd-listen "unix:$work/nbd.sock" --control "$work/control.sock" \
	"${fuse_opt[@]}" --device "disk=$img,filter=tracker" 2>"$work/log" &
pid=$!
for _ in $(seq 200); do [ -S "$work/control.sock" ] && [ -S "$work/nbd.sock" ] && break; sleep 0.05; done
[ -S "$work/control.sock" ] || die "bdfilterd did not start"
if [ "$mode" = ext4 ]; then
	for _ in $(seq 100); do [ -e "$work/fuse/disk" ] && break; sleep 0.05; done
	[ -e "$work/fuse/disk" ] || die "the FUSE file $work/fuse/disk did not appear"
fi
B cbtinfo -d disk | sed 's/^/  /'

if [ "$mode" = ext4 ]; then
	step "ext4 on /dev/loop over the FUSE file, files written with their md5 sums"
	loop=$(losetup -f --show --direct-io=on "$work/fuse/disk")
	loops+=("$loop")
	echo "  $work/fuse/disk -> $loop"
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$loop"
	mkdir "$work/mnt"
	mount "$loop" "$work/mnt"
	mounts+=("$work/mnt")
else
	echo "demo: $mode; writing raw data through NBD instead of a filesystem"
fi

# write_data ROUND: files in the filesystem (or raw ranges through NBD). The
# first round fills a fifth of the disk; the second changes a little of it,
# as a day on a real disk does.
write_data() {
	local round=$1 i n
	if [ "$mode" = ext4 ]; then
		n=$([ "$round" = 0 ] && echo 100 || echo 8)
		mkdir -p "$work/mnt/round$round"
		for i in $(seq 0 $((n - 1))); do
			head -c $(((RANDOM % 1536 + 256) * 1024)) /dev/urandom >"$work/mnt/round$round/f$i"
		done
		if [ "$round" -gt 0 ]; then
			head -c 1M /dev/urandom >"$work/mnt/round0/f$((round + 6))"
			rm -f "$work/mnt/round0/f$((round + 8))"
		fi
		(cd "$work/mnt" && find . -type f ! -name hash.md5 -print0 | sort -z | xargs -0 md5sum >hash.md5)
		sync -f "$work/mnt"
		echo "  round $round: $(find "$work/mnt" -type f | wc -l) files, $(du -sh "$work/mnt" | cut -f1) used"
	else
		local uri="nbd+unix:///disk?socket=$work/nbd.sock" args=()
		n=$([ "$round" = 0 ] && echo 256 || echo 16)
		for i in $(seq 0 $((n - 1))); do
			args+=(-c "write -P $(((round * 64 + i) % 255 + 1)) $(((RANDOM * 8 % 131072) * 4096)) $(((RANDOM % 64 + 1) * 4096))")
		done
		qemu-io -f raw "$uri" "${args[@]}" >/dev/null
		echo "  round $round: $n random ranges written through NBD"
	fi
}

# take N: a snapshot of disk (frozen), its image copied out with nbdcopy as the
# reference for the check, and a backup of it; leaves $id set.
image_uri="nbd+unix:///disk-image?socket=$work/nbd.sock"
take() {
	local n=$1 out
	id=$(B snapshot_create -d disk | kv id)
	B snapshot_appendstorage -i "$id" -f "$work/diff.img" >/dev/null
	out=$(B snapshot_take -i "$id")
	echo "  snapshot $id taken ($(echo "$out" | paste -sd ' '))"
	[ "$mode" = ext4 ] && cp "$work/mnt/hash.md5" "$work/hash$n.md5"
	nbdcopy "$image_uri" "$work/ref$n.img"
}

repo="$work/repo"
write_data 0
step "snapshot 1 (filesystem frozen at take), full backup from its image"
take 0
"$backup" full --from "$image_uri" --repo "$repo" --json --quiet >"$work/b0.json"
sed 's/^/  /' "$work/b0.json"; echo
B snapshot_destroy -i "$id"

step "more writes: new files, one file rewritten, one removed"
write_data 1
since=$(B cbtinfo -d disk | kv changes_number)

step "snapshot 2, incremental backup of what the CBT says changed"
take 1
B readcbtmap -d disk -f "$work/cbt.map" >/dev/null
block_size=$(B cbtinfo -d disk | kv block_size)
changed=$(od -An -v -tu1 -w1 "$work/cbt.map" | awk -v n="$since" '$1 > n { c++ } END { print c + 0 }')
blocks_total=$(B cbtinfo -d disk | kv block_count)
echo "  CBT: $changed of $blocks_total blocks of $block_size bytes changed since snapshot $since"
"$backup" incremental --from "$image_uri" --repo "$repo" --json --quiet >"$work/b1.json"
sed 's/^/  /' "$work/b1.json"; echo
B snapshot_destroy -i "$id"

step "the repository"
"$backup" list --repo "$repo" | sed 's/^/  /'
"$backup" verify --repo "$repo" | sed 's/^/  /'

step "restoring both points and checking them"
for n in 0 1; do
	"$backup" restore --repo "$repo" --at "$n" --to "$work/restored$n.img" --quiet >/dev/null
	cmp "$work/ref$n.img" "$work/restored$n.img" || die "restore --at $n differs from snapshot $((n + 1))'s image"
	echo "  backup $n: byte-identical to snapshot $((n + 1))'s image (cmp)"
	if [ "$mode" = ext4 ]; then
		l=$(losetup -f --show -r "$work/restored$n.img")
		loops+=("$l")
		mkdir -p "$work/r$n"
		mount -o ro,noload "$l" "$work/r$n"
		mounts+=("$work/r$n")
		cmp -s "$work/hash$n.md5" "$work/r$n/hash.md5" || die "backup $n holds another md5 list"
		(cd "$work/r$n" && md5sum --quiet -c hash.md5) || die "files in backup $n differ from their md5 sums"
		echo "  backup $n: ext4 mounts, $(wc -l <"$work/hash$n.md5") files match their md5 sums"
		umount "$work/r$n"
		unset 'mounts[-1]'
		losetup -d "$l"
		unset 'loops[-1]'
	fi
done

step "bdfilter-backup run --keep-last 2, twice: one command per backup, then prune"
for round in 2 3; do
	write_data "$round"
	[ "$mode" = ext4 ] && cp "$work/mnt/hash.md5" "$work/hash$round.md5"
	"$backup" run --control "$work/control.sock" --device disk --repo "$repo" --storage "$work" \
		--keep-last 2 | sed 's/^/  /'
done
[ -z "$(B snapshot_collect | kv id)" ] || die "run left a snapshot"
"$backup" list --repo "$repo" | sed 's/^/  /'
"$backup" info --repo "$repo" | grep -E "^(backups|logical_bytes|unique_bytes|stored_bytes|dedup_ratio)=" | sed 's/^/  /'

step "instant restore of the last point: serve (NBD) and mount (FUSE), nothing copied first"
"$backup" restore --repo "$repo" --to "$work/last.img" --quiet >/dev/null
mkfifo "$work/ready"
"$backup" serve --repo "$repo" --listen "unix:$work/serve.sock" >"$work/ready" 2>"$work/serve.err" &
spid=$!
read -r line <"$work/ready" || die "serve did not start: $(cat "$work/serve.err")"
echo "  $line"
nbdinfo "nbd+unix:///?socket=$work/serve.sock" | grep -E "export-size|is_read_only" | sed 's/^\t*/  /'
nbdcopy "nbd+unix:///?socket=$work/serve.sock" "$work/served.img"
cmp "$work/served.img" "$work/last.img" || die "the served image differs from restore's"
echo "  nbdcopy of the export: byte-identical to restore --to FILE"
kill -TERM "$spid"; wait "$spid" || die "serve did not exit 0"
rm -f "$work/served.img" "$work/ready"
if [ "$mode" = ext4 ]; then
	mkdir "$work/instant" "$work/r"
	mkfifo "$work/ready"
	"$backup" mount --repo "$repo" "$work/instant" >"$work/ready" 2>"$work/mount.err" &
	mpid=$!
	read -r line <"$work/ready" || die "mount did not start: $(cat "$work/mount.err")"
	echo "  $line"
	l=$(losetup -f --show -r "$work/instant/disk.img")
	loops+=("$l")
	mount -o ro,noload "$l" "$work/r"
	mounts+=("$work/r")
	(cd "$work/r" && md5sum --quiet -c hash.md5) || die "files of the mounted backup differ from their md5 sums"
	cmp -s "$work/hash3.md5" "$work/r/hash.md5" || die "the mounted backup is not the last point"
	echo "  losetup -r + mount -o ro: $(wc -l <"$work/r/hash.md5") files match their md5 sums"
	umount "$work/r"; unset 'mounts[-1]'
	losetup -d "$l"; unset 'loops[-1]'
	kill -TERM "$mpid"; wait "$mpid" || die "mount did not exit 0"
fi

step "summary"
jrow() { # LABEL JSON CHANGED
	/usr/bin/python3 - "$@" "$work/b0.json" <<'PY'
import json, sys
label, path, changed, full = sys.argv[1], sys.argv[2], sys.argv[3], json.load(open(sys.argv[4]))
b = json.load(open(path))
print("  %-13s %14s %12d %12.1f %9.3f %9.3f %9.3f" % (label, changed, b["blocks"], b["bytes_read"] / 1048576,
      b["seconds"], b["bytes_read"] / full["bytes_read"], b["seconds"] / full["seconds"]))
PY
}
printf '  %-13s %14s %12s %12s %9s %9s %9s\n' backup "blocks changed" "blocks read" "MiB read" "time (s)" \
	"read/full" "time/full"
jrow "0 full" "$work/b0.json" "(all)"
jrow "1 incremental" "$work/b1.json" "$changed"
echo "  (blocks of $block_size bytes; $blocks_total in the disk; $mode)"

step "cleaning up"
for m in "${mounts[@]}"; do umount "$m"; done
mounts=()
for l in "${loops[@]}"; do losetup -d "$l"; done
loops=()
kill -TERM "$pid"
wait "$pid"
pid=
echo "  bdfilterd stopped (exit 0)"
echo
echo "demo: OK"
