#!/bin/bash
# bdfilter-backup mount: a restore point as a read-only file in a FUSE
# directory. An ext4 filesystem with known files (mkfs.ext4 -d) on a tracked
# bdfilterd device gets a full backup; files are added and one removed through
# bdfilterd's own FUSE file and a loop device; an incremental follows. Each
# point is mounted: the file is the image's size and read-only, byte for byte
# what `restore --at N` writes, and `losetup -r` plus `mount -o ro` of it show
# exactly that point's files. It ends with fusermount3 -u (and with SIGTERM),
# exit 0 and nothing left mounted; a bad directory or a missing backup is
# exit 1 with one line. Each mount is waited for by its ready line.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need mkfs.ext4 fusermount3 md5sum cmp
. "$BDF_SRCDIR/tests/functional/fuse-lib.sh"
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

R="$T/repo"
M="$T/restore"

# ---- the repository: ext4 with files, a full backup, changes, an incremental ----
mkdir "$T/files0"
generate_files "$T/files0" a 6
truncate -s 64M "$T/d.img"
mkfs.ext4 -q -F -d "$T/files0" "$T/d.img" >/dev/null || fail "mkfs.ext4 -d"
truncate -s 256M "$T/diff.img"
fuse_start --device "d=$T/d.img,filter=tracker"
backup() {
	id=$(snap d "$T/diff.img")
	"$BACKUP" "$@" --from "$(uri d-image)" --repo "$R" --quiet >/dev/null 2>"$T/err" ||
		fail "$1 backup: $(cat "$T/err")"
	B snapshot_destroy -i "$id"
}
backup full # (version 2; backup-serve.sh (version 1) reads version 1)
L=$(loop_attach "$FUSE/d")
mnt "$L" "$T/m"
generate_files "$T/m" b 4
rm "$T/m/a-0"
sed -i '/ a-0$/d' "$T/m/hash.md5"
cp "$T/m/hash.md5" "$T/hash1.md5"
umnt "$T/m"
loop_detach "$L"
backup incremental
bdf_stop
for n in 0 1; do
	"$BACKUP" restore --repo "$R" --at $n --to "$T/r$n.img" --quiet >/dev/null || fail "restore --at $n"
done

# ---- mount ----
MPID=
# mount_repo ARGS...: start `mount --repo $R ARGS... $M`, wait for its ready
# line (a blocking read on a FIFO) into $READY.
mount_repo() {
	mkfifo "$T/ready"
	"$BACKUP" mount --repo "$R" "$@" "$M" >"$T/ready" 2>"$T/mount.err" &
	MPID=$!
	exec 3<"$T/ready"
	rm -f "$T/ready"
	READY=
	if ! read -r -t 30 READY <&3; then
		_rc=0; wait "$MPID" || _rc=$?
		MPID=
		fail "mount $* did not become ready (exit $_rc): $(cat "$T/mount.err")"
	fi
}
# mount_ended: it exited 0 and left nothing mounted.
mount_ended() {
	_rc=0; wait "$MPID" || _rc=$?
	MPID=
	exec 3<&-
	[ $_rc = 0 ] || fail "mount exited $_rc: $(cat "$T/mount.err")"
	! grep -q " $M " /proc/self/mountinfo || fail "$M is still mounted"
	[ ! -s "$T/mount.err" ] || fail "mount said: $(cat "$T/mount.err")"
}
_mount_cleanup() {
	_rc=$?
	set +e
	for _m in $_FUSE_MOUNTS; do umount "$_m" 2>/dev/null || umount -l "$_m" 2>/dev/null; done
	tac "$_FUSE_LOOPS" | while read -r _l; do losetup -d "$_l" 2>/dev/null; done
	: >"$_FUSE_LOOPS"
	_FUSE_MOUNTS=
	if [ -n "$MPID" ]; then
		kill -TERM "$MPID"
		timeout 20 tail --pid="$MPID" -f /dev/null
	fi
	grep -q " $M " /proc/self/mountinfo && umount -l "$M"
	(exit $_rc)
	_fuse_cleanup
}
trap _mount_cleanup EXIT

# check N HASHES: the file is backup N's image, and its filesystem holds the
# files HASHES lists and no others
check() {
	[ "$(stat -c '%s %a %F' "$M/disk.img")" = "$((64 << 20)) 444 regular file" ] ||
		fail "backup $1: $(stat -c '%s %a %F' "$M/disk.img")"
	[ "$(ls "$M")" = disk.img ] || fail "backup $1: the directory lists $(ls "$M")"
	cmp "$M/disk.img" "$T/r$1.img" || fail "backup $1's file differs from its restore"
	dd if=/dev/zero of="$M/disk.img" bs=4k count=1 conv=notrunc 2>"$T/err" && fail "wrote to backup $1's file"
	grep -q "Read-only file system\|Permission denied" "$T/err" || fail "write to backup $1: $(cat "$T/err")"
	L=$(loop_attach "$M/disk.img" -r)
	[ "$(losetup -n -O RO "$L" | tr -d ' ')" = 1 ] || fail "the loop device on backup $1 is writable"
	mnt "$L" "$T/m" -o ro
	cmp "$T/m/hash.md5" "$2" || fail "backup $1: hash.md5 differs"
	check_files "$T/m"
	[ "$(ls "$T/m" | grep -v lost+found | wc -l)" = $(($(wc -l <"$2") + 1)) ] ||
		fail "backup $1 holds other files: $(ls "$T/m")"
	umnt "$T/m"
	loop_detach "$L"
}

# backup 0, ended by fusermount3 -u
mount_repo --at 0
[ "$READY" = "mounted backup 0 of $R on $M/disk.img" ] || fail "ready line: $READY"
check 0 "$T/files0/hash.md5"
[ ! -e "$M/b-0" ] || fail "backup 0 shows a later file"
flock -n -x "$R/lock" true && fail "mount does not hold the repository's read lock"
fusermount3 -u "$M" || fail "fusermount3 -u $M"
mount_ended

# the last backup by default, ended by SIGTERM
mount_repo
[ "$READY" = "mounted backup 1 of $R on $M/disk.img" ] || fail "ready line: $READY"
check 1 "$T/hash1.md5"
kill -TERM "$MPID"
mount_ended
flock -n -x "$R/lock" true || fail "the lock is held after mount ended"

# another file name
mount_repo --at 0 --export sda.raw
[ "$(ls "$M")" = sda.raw ] && cmp "$M/sda.raw" "$T/r0.img" || fail "--export sda.raw: $(ls "$M")"
kill -INT "$MPID"
mount_ended

# mistakes: exit 1 with one line (2 for usage), nothing mounted
touch "$T/plain"
for dir in "$T/plain" "$T/no/such/dir"; do
	rc=0; "$BACKUP" mount --repo "$R" "$dir" >"$T/out" 2>"$T/err" || rc=$?
	[ $rc = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] && [ ! -s "$T/out" ] || fail "mount on $dir: exit $rc: $(cat "$T/err")"
done
rc=0; "$BACKUP" mount --repo "$R" --at 5 "$M" >"$T/out" 2>"$T/err" || rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "no backup 5" "$T/err" ||
	fail "mount --at a missing backup: exit $rc: $(cat "$T/err")"
rc=0; "$BACKUP" mount --repo "$R" >/dev/null 2>"$T/err" || rc=$?
[ $rc = 2 ] || fail "mount without a directory: exit $rc"
rc=0; "$BACKUP" mount --repo "$R" --export a/b "$M" >/dev/null 2>"$T/err" || rc=$?
[ $rc = 2 ] || fail "mount --export a/b: exit $rc"
! grep -q " $M " /proc/self/mountinfo || fail "a failed mount left $M mounted"
exit 0
