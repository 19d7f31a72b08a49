#!/bin/bash
# bdfilter-backup's chain rules, on hand-edited manifests of a real repository
# (full 0, incremental 1, full 2, incremental 3, from bdfilterd snapshots):
# backup 0 is full, a full has no parent, an incremental's parent is the
# backup before it, usable, of the same size. A backup that breaks one is
# unusable: restore of it fails with one line naming it and the rule, verify
# and list show it damaged, and so are the backups resting on it; the others
# restore byte for byte. (Under the ASan build, reading before the start of
# the backups' array shows here too.)
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy qemu-io
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

BLK=65536
mkimage "$T/d.img" 8
truncate -s 256M "$T/diff.img"
bdf_start --device "d=$T/d.img,filter=tracker"
R="$T/repo"
IMG=$(uri d-image)

# take N KIND: a snapshot, backup N of KIND from it, its image in $T/refN.img
take() {
	_id=$(snap d "$T/diff.img")
	# the chain rules are version 1's (version 2's maps are complete)
	_v=; [ "$2" = full ] && _v="--repo-version 1"
	"$BACKUP" "$2" --from "$IMG" --repo "$R" $_v --quiet >/dev/null 2>"$T/err" || fail "$2 backup $1: $(cat "$T/err")"
	nbdcopy "$IMG" "$T/ref$1.img"
	B snapshot_destroy -i "$_id"
}
take 0 full
io d "write -P 0x11 0 $BLK"
take 1 incremental
io d "write -P 0x22 $BLK $BLK"
take 2 full
io d "write -P 0x33 $((2 * BLK)) $BLK"
take 3 incremental
"$BACKUP" verify --repo "$R" >/dev/null || fail "verify of the repository as made"
C="$T/c"

# edit N PYTHON: on a fresh copy $C of the repository, run PYTHON on backup
# N's manifest as m
edit() {
	rm -rf "$C" && cp -a "$R" "$C"
	$PY - "$C/$(printf %06d "$1")/manifest.json" "$2" <<'PYEOF' || fail "editing backup $1's manifest"
import json, sys
m = json.load(open(sys.argv[1]))
exec(sys.argv[2])
json.dump(m, open(sys.argv[1], "w"), indent=2)
PYEOF
}

# check WHAT N PATTERN [DEPENDENT...]: in $C, backup N is unusable with a
# message matching PATTERN, each DEPENDENT because its parent is, and the
# other backups of 0-3 are fine.
check() {
	local what=$1 bad=$2 pat=$3 n rc unusable=0
	local -A want=()
	shift 3
	want[$bad]="backup $bad: .*$pat"
	for n in "$@"; do want[$n]="backup $n: rests on backup $((n - 1)), which is unusable"; done
	for n in 0 1 2 3; do
		rm -f "$T/x.img"
		rc=0; "$BACKUP" restore --repo "$C" --at $n --to "$T/x.img" >/dev/null 2>"$T/err" || rc=$?
		if [ -n "${want[$n]:-}" ]; then
			unusable=$((unusable + 1))
			[ $rc = 1 ] || fail "$what: restore --at $n exited $rc: $(cat "$T/err")"
			[ "$(wc -l <"$T/err")" = 1 ] && grep -q "^bdfilter-backup: ${want[$n]}" "$T/err" ||
				fail "$what: restore --at $n: expected '${want[$n]}', got: $(cat "$T/err")"
			[ ! -e "$T/x.img" ] || fail "$what: restore --at $n made its target"
		else
			[ $rc = 0 ] && [ ! -s "$T/err" ] || fail "$what: restore --at $n exited $rc: $(cat "$T/err")"
			cmp "$T/ref$n.img" "$T/x.img" || fail "$what: restore --at $n differs"
		fi
	done
	rc=0; "$BACKUP" verify --repo "$C" >"$T/out" 2>"$T/err" || rc=$?
	[ $rc = 1 ] || fail "$what: verify exited $rc: $(cat "$T/out" "$T/err")"
	[ "$(wc -l <"$T/err")" = 1 ] && grep -q "^bdfilter-backup: verify: .* is damaged" "$T/err" ||
		fail "$what: verify's stderr: $(cat "$T/err")"
	rc=0; "$BACKUP" list --repo "$C" >"$T/list" 2>"$T/err" || rc=$?
	[ $rc = 1 ] || fail "$what: list exited $rc: $(cat "$T/list" "$T/err")"
	[ "$(wc -l <"$T/err")" = $unusable ] || fail "$what: list's stderr: $(cat "$T/err")"
	for n in 0 1 2 3; do
		if [ -n "${want[$n]:-}" ]; then
			[ "$(grep -c "^error=backup $n:" "$T/out")" = 1 ] && grep -q "^error=${want[$n]}" "$T/out" ||
				fail "$what: verify did not say '${want[$n]}': $(cat "$T/out")"
			grep -q "^backup=$n error=${want[$n]}" "$T/list" || fail "$what: list: $(cat "$T/list")"
		else
			! grep -q "^error=backup $n:" "$T/out" || fail "$what: verify found backup $n damaged: $(cat "$T/out")"
			grep -q "^backup=$n kind=" "$T/list" || fail "$what: list: $(cat "$T/list")"
		fi
	done
}

edit 0 'm["kind"] = "incremental"; m["parent"] = None'
check "backup 0 incremental, parent null" 0 "backup 0 must be a full backup" 1
edit 0 'm["kind"] = "incremental"; del m["parent"]'
check "backup 0 incremental, no parent" 0 "backup 0 must be a full backup" 1
edit 0 'm["kind"] = "incremental"; m["parent"] = -1'
check "backup 0 incremental, parent -1" 0 "backup 0 must be a full backup" 1
edit 0 'm["kind"] = "incremental"; m["parent"] = 0'
check "backup 0 incremental, parent 0" 0 "backup 0 must be a full backup" 1
edit 1 'del m["parent"]'
check "incremental, no parent" 1 "an incremental needs a parent"
edit 1 'm["parent"] = None'
check "incremental, parent null" 1 "an incremental needs a parent"
edit 1 'm["parent"] = "0"'
check "incremental, parent a string" 1 "an incremental needs a parent"
edit 1 'm["parent"] = -5'
check "incremental, parent -5" 1 "\"parent\" -5 is not an earlier backup"
edit 1 'm["parent"] = 1'
check "incremental, its own parent" 1 "\"parent\" 1 is not an earlier backup"
edit 3 'm["parent"] = 7'
check "incremental, parent 7" 3 "\"parent\" 7 is not an earlier backup"
edit 3 'm["parent"] = 1'
check "incremental, parent past a full" 3 "\"parent\" 1 is not backup 2, the one before it"
edit 2 'm["parent"] = 1'
check "full with a parent" 2 "a full backup has no parent" 3
edit 1 'm["size"] += 65536'
check "incremental, another size" 1 "its size ([0-9]*) differs from backup 0's"
edit 0 'm["block_size"] = 4096'
check "parent unusable" 0 "block_size" 1
bdf_stop
