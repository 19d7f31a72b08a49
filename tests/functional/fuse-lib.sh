# Helpers for the FUSE export tests (sourced after lib.sh): loop devices and
# mounts that are undone at exit, before the daemon is stopped, so that a
# failed test leaves nothing attached and never waits on a busy FUSE mount.

[ -c /dev/fuse ] || skip "/dev/fuse is not available"
need losetup mount umount md5sum
losetup -f >/dev/null 2>&1 || skip "no free loop device (losetup -f)"

FUSE="$T/fuse"
# Loop devices are recorded in a file: loop_attach runs in $(...) subshells.
_FUSE_LOOPS="$T/.loops"
_FUSE_MOUNTS=""
: >"$_FUSE_LOOPS"

_fuse_cleanup() {
	_rc=$?
	set +e
	for _m in $_FUSE_MOUNTS; do umount "$_m" 2>/dev/null || umount -l "$_m" 2>/dev/null; done
	[ -f "$_FUSE_LOOPS" ] && tac "$_FUSE_LOOPS" | while read -r _l; do losetup -d "$_l" 2>/dev/null; done
	# The daemon may wait its 10 s grace for a mount still busy; give it that
	# before lib.sh's SIGKILL, which would leave a dead mount behind.
	if [ -n "$BDF_PID" ] && kill -0 "$BDF_PID" 2>/dev/null; then
		kill -TERM "$BDF_PID"
		timeout 20 tail --pid="$BDF_PID" -f /dev/null
	fi
	grep -q " $FUSE .* fuse.bdfilter " /proc/self/mountinfo && umount -l "$FUSE"
	(exit $_rc)
	_bdf_cleanup
}
trap _fuse_cleanup EXIT

# fuse_start ARGS...: bdfilterd with --fuse-dir $FUSE; waits for the mount.
fuse_start() {
	bdf_start --fuse-dir "$FUSE" "$@"
	for _ in $(seq 100); do
		grep -q " $FUSE .* fuse.bdfilter " /proc/self/mountinfo && return 0
		sleep 0.05
	done
	fail "$FUSE was not mounted"
}

# loop_attach FILE [LOSETUP OPTIONS...]: prints the loop device.
loop_attach() {
	_f=$1; shift
	_l=$(losetup -f --show "$@" "$_f") || fail "losetup $* $_f"
	echo "$_l" >>"$_FUSE_LOOPS"
	echo "$_l"
}

loop_detach() {
	losetup -d "$1" || fail "losetup -d $1"
	sed -i "\\#^$1\$#d" "$_FUSE_LOOPS"
}

# mnt DEV DIR [MOUNT OPTIONS...]
mnt() {
	_d=$1 _m=$2; shift 2
	mkdir -p "$_m"
	mount "$@" "$_d" "$_m" || fail "mount $* $_d $_m"
	_FUSE_MOUNTS="$_m $_FUSE_MOUNTS"
}

umnt() {
	umount "$1" || fail "umount $1"
	_FUSE_MOUNTS=$(echo "$_FUSE_MOUNTS" | sed "s#$1 ##")
}

# generate_files DIR PREFIX COUNT: files of 8..107 KiB of random data, their
# md5 sums appended to DIR/hash.md5 (names relative to DIR, so that the list
# checks whatever filesystem DIR is).
generate_files() {
	for _i in $(seq 0 $(($3 - 1))); do
		dd if=/dev/urandom of="$1/$2-$_i" bs=1K count=$((RANDOM % 100 + 8)) status=none ||
			fail "writing $1/$2-$_i"
		(cd "$1" && md5sum "$2-$_i" >>hash.md5)
	done
}

check_files() {
	(cd "$1" && md5sum --quiet -c hash.md5) || fail "files in $1 differ from $1/hash.md5"
}
