#!/bin/bash
# bdfilter-backup run: one command per backup against bdfilterd. The first run
# attaches the tracker and takes a full backup ("first backup"), the second an
# incremental, each restored byte for byte to the device as it was at the
# run's snapshot (a write during the second run's copy is not in it). After
# every run no snapshot and no image export is left: also after a bad
# repository, a read error in the middle of the copy, and a SIGINT in the
# middle of the copy (nothing stored; the next run goes on from the last
# backup); a second signal exits at once and names the snapshot left. Two runs on one device at once: the second fails with one line, the
# first completes. --all: one snapshot for two devices, one repository, a
# line each and a total. The reasons "tracker newly attached" and
# "generation changed"; --keep-last prunes after the backups; bad command
# lines exit 2 with one line.
#
# Device d has the faulty filter below the tracker that run attaches: a rule
# that delays one read holds the copy in the middle for as long as the test
# needs, and its matched= count is the marker that the copy is there (no fixed
# sleeps).
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy qemu-io
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

MIB=$((1 << 20))
truncate -s 64M "$T/d.img"
head -c 24M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
truncate -s 32M "$T/e.img"
head -c 4M /dev/urandom | dd of="$T/e.img" bs=1M seek=8 conv=notrunc status=none
bdf_start --device "d=$T/d.img,filter=faulty" --device "e=$T/e.img,filter=tracker"
R="$T/repo"

# run_ok NAME ARGS...: bdfilter-backup run ARGS, which must succeed with
# nothing on stderr; its output in $T/NAME.out.
run_ok() {
	_n=$1; shift
	"$BACKUP" run --storage "$T" "$@" >"$T/$_n.out" 2>"$T/$_n.err" || fail "run $_n: $(cat "$T/$_n.err")"
	[ ! -s "$T/$_n.err" ] || fail "run $_n said: $(cat "$T/$_n.err")"
	clean
}
# run_fails NAME ARGS...: it must exit 1 with one line on stderr.
run_fails() {
	_n=$1; shift
	_rc=0; "$BACKUP" run --storage "$T" "$@" >"$T/$_n.out" 2>"$T/$_n.err" || _rc=$?
	[ "$_rc" = 1 ] || fail "run $_n: exit $_rc, not 1: $(cat "$T/$_n.err")"
	[ "$(wc -l <"$T/$_n.err")" = 1 ] || fail "run $_n: not one line on stderr: $(cat "$T/$_n.err")"
}
# clean: no snapshot, no image export left.
clean() {
	[ -z "$(B snapshot_collect)" ] || fail "a snapshot is left: $(B snapshot_collect)"
	! B device_list | grep -q -- '^name=.*-image$' || fail "an image export is left: $(B device_list | grep name=)"
}
# restore_cmp REPO N REF: backup N of REPO restores to REF, byte for byte.
restore_cmp() {
	"$BACKUP" restore --repo "$1" --at "$2" --to "$T/restored.img" --quiet >/dev/null 2>"$T/err" ||
		fail "restore $1 --at $2: $(cat "$T/err")"
	cmp "$T/restored.img" "$3" || fail "backup $2 of $1 is not the device as it was at its run"
}
backups() { "$BACKUP" list --repo "$1" | grep -c '^backup=' || true; }
# hold_copy MS: the next read of d (the copy's, through the image) waits MS
# ms: the copy cannot end before. The rule counts afresh.
hold_copy() { B fault_clear -d d >/dev/null; B fault_set -d d -o read -e none -w "$1" -c 1 >/dev/null; }
# wait_copy PID: until the copy's read is held.
wait_copy() {
	for _ in $(seq 1200); do
		[ "$(B fault_status -d d | kv matched | head -n1)" -ge 1 ] && return 0
		kill -0 "$1" 2>/dev/null || fail "the run ended before its copy was seen"
		sleep 0.05
	done
	fail "the copy never read d"
}

# 1: the tracker attached by run, a full backup, "first backup"
nbdcopy "$(uri d)" "$T/ref0.img"
run_ok 1 --device d --repo "$R" --json
[ "$(jfield "$T/1.out" kind)" = full ] || fail "first run: $(cat "$T/1.out")"
[ "$(jfield "$T/1.out" reason)" = "first backup of the device" ] || fail "first run's reason: $(cat "$T/1.out")"
[ "$(jfield "$T/1.out" backup)" = 0 ] || fail "first run: $(cat "$T/1.out")"
[ "$(jfield "$T/1.out" bytes_read)" = $((24 * MIB)) ] || fail "first run read: $(cat "$T/1.out")"
B device_list | grep -q '^filters=.*tracker' || fail "run did not attach the tracker"
restore_cmp "$R" 0 "$T/ref0.img"

# 2: writes, then an incremental; a write during its copy is not in it
io d "write -P 0x11 $((3 * MIB)) 1M"
io d "write -P 0x22 $((40 * MIB + 4096)) 4096"
nbdcopy "$(uri d)" "$T/ref1.img"
hold_copy 3000
"$BACKUP" run --storage "$T" --device d --repo "$R" >"$T/2.out" 2>"$T/2.err" &
pid=$!
wait_copy $pid
io d "write -P 0x33 $((3 * MIB)) 64k"
io d "write -P 0x44 $((50 * MIB)) 64k"
rc=0; wait $pid || rc=$?
[ $rc = 0 ] || fail "second run: exit $rc: $(cat "$T/2.err")"
[ ! -s "$T/2.err" ] || fail "second run said: $(cat "$T/2.err")"
B fault_clear -d d >/dev/null
clean
[ "$(wc -l <"$T/2.out")" = 1 ] || fail "second run: not one summary line: $(cat "$T/2.out")"
grep -q '^device=d kind=incremental reason="generation unchanged: changes since backup 0 (snapshot 1)" backup=1 ' "$T/2.out" ||
	fail "second run: $(cat "$T/2.out")"
grep -q " bytes_read=$((17 * 65536)) " "$T/2.out" || fail "second run read other than the 17 changed blocks: $(cat "$T/2.out")"
restore_cmp "$R" 1 "$T/ref1.img"
restore_cmp "$R" 0 "$T/ref0.img"
nbdcopy "$(uri d)" "$T/now.img"
! cmp -s "$T/now.img" "$T/ref1.img" || fail "the writes during the copy did not reach d"

# failures: no snapshot left, exit 1, one line, the repository as it was
run_fails bad-repo --device d --repo "$T/no/such/dir"
clean
B fault_clear -d d >/dev/null
B fault_set -d d -o read -e EIO >/dev/null
run_fails eio --device d --repo "$R"
grep -q "Input/output error" "$T/eio.err" || fail "read error run: $(cat "$T/eio.err")"
clean
B fault_clear -d d >/dev/null
[ "$(backups "$R")" = 2 ] || fail "a failed run changed the repository"

# SIGINT in the middle of a copy: stopped, nothing stored
io d "write -P 0x55 $((8 * MIB)) 8M"
nbdcopy "$(uri d)" "$T/ref2.img"
hold_copy 3000
set -m # a background job of a script otherwise ignores SIGINT
"$BACKUP" run --storage "$T" --device d --repo "$R" >"$T/int.out" 2>"$T/int.err" &
pid=$!
set +m
wait_copy $pid
kill -INT $pid
rc=0; wait $pid || rc=$?
B fault_clear -d d >/dev/null
[ $rc = 1 ] || fail "run after SIGINT: exit $rc: $(cat "$T/int.err")"
[ "$(cat "$T/int.err")" = "bdfilter-backup: run: stopped by SIGINT: snapshot destroyed; nothing stored for d" ] ||
	fail "run after SIGINT said: $(cat "$T/int.err")"
[ ! -s "$T/int.out" ] || fail "run after SIGINT printed a summary: $(cat "$T/int.out")"
clean
[ "$(backups "$R")" = 2 ] || fail "the interrupted run changed the repository"
# the next run goes on from backup 1 (the failed runs took snapshots 3 and 4)
run_ok 3 --device d --repo "$R" --json
[ "$(jfield "$T/3.out" kind)" = incremental ] && [ "$(jfield "$T/3.out" backup)" = 2 ] ||
	fail "the run after SIGINT: $(cat "$T/3.out")"
restore_cmp "$R" 2 "$T/ref2.img"

# a second signal exits at once, naming the snapshot it leaves (SIGINT and
# SIGTERM: two signals pending are two, where two SIGINTs could be one)
io d "write -P 0x5a $((20 * MIB)) 1M"
hold_copy 3000
set -m
"$BACKUP" run --storage "$T" --device d --repo "$R" >"$T/int2.out" 2>"$T/int2.err" &
pid=$!
set +m
wait_copy $pid
kill -INT $pid
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc = 1 ] || fail "run after two signals: exit $rc: $(cat "$T/int2.err")"
id=$(B snapshot_collect | kv id)
[ -n "$id" ] || fail "no snapshot is left after two signals"
grep -q "^bdfilter-backup: run: SIG[A-Z]*, a second signal: exiting now; snapshot $id is left behind" "$T/int2.err" ||
	fail "after two signals: $(cat "$T/int2.err")"
B snapshot_destroy -i "$id" >/dev/null
B fault_clear -d d >/dev/null
clean
[ "$(backups "$R")" = 3 ] || fail "the run stopped by two signals changed the repository"

# two runs on one device at once: the second fails, the first completes
io d "write -P 0x66 0 4M"
nbdcopy "$(uri d)" "$T/ref3.img"
hold_copy 6000
"$BACKUP" run --storage "$T" --device d --repo "$R" >"$T/4.out" 2>"$T/4.err" &
pid=$!
wait_copy $pid
run_fails same-repo --device d --repo "$R"
grep -q "$R is in use: another backup is being written to it" "$T/same-repo.err" || fail "$(cat "$T/same-repo.err")"
run_fails other-repo --device d --repo "$T/other"
grep -q "run: snapshot_create: EBUSY: .*(is another backup of it running?)" "$T/other-repo.err" ||
	fail "$(cat "$T/other-repo.err")"
rc=0; wait $pid || rc=$?
B fault_clear -d d >/dev/null
[ $rc = 0 ] && [ ! -s "$T/4.err" ] || fail "the first of two runs: exit $rc: $(cat "$T/4.err")"
grep -q '^device=d kind=incremental .* backup=3 ' "$T/4.out" || fail "the first of two runs: $(cat "$T/4.out")"
clean
restore_cmp "$R" 3 "$T/ref3.img"
# what the second left is an empty repository: the next run's is its first
run_ok 5 --device d --repo "$T/other"
grep -q '^device=d kind=full reason="first backup of the device" backup=0 ' "$T/5.out" || fail "$(cat "$T/5.out")"
clean

# --all: one snapshot of d and e, both in one repository
nbdcopy "$(uri d)" "$T/all-d0.img"
nbdcopy "$(uri e)" "$T/all-e0.img"
run_ok all1 --all --repo "$T/all"
[ "$(wc -l <"$T/all1.out")" = 3 ] || fail "--all: $(cat "$T/all1.out")"
grep -q "^device=d kind=full reason=\"first backup of the device\" backup=0 .* repo=$T/all " "$T/all1.out" || fail "--all: $(cat "$T/all1.out")"
grep -q "^device=e kind=full reason=\"first backup of the device\" backup=1 .* repo=$T/all " "$T/all1.out" || fail "--all: $(cat "$T/all1.out")"
sum=$(sed -n 's/^device=.* bytes_read=\([0-9]*\) .*/\1/p' "$T/all1.out" | paste -sd+ | bc)
grep -q "^devices=2 backed_up=2 failed=0 bytes_read=$sum " "$T/all1.out" || fail "--all total: $(cat "$T/all1.out")"
restore_cmp "$T/all" 0 "$T/all-d0.img"
restore_cmp "$T/all" 1 "$T/all-e0.img"
io e "write -P 0x77 $((9 * MIB)) 64k"
nbdcopy "$(uri e)" "$T/all-e1.img"
run_ok all2 --all --repo "$T/all" --json
$PY - "$T/all2.out" <<'PYEOF' || fail "--all --json: $(cat "$T/all2.out")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert [l.get("device") for l in lines] == ["d", "e", None], lines
assert all(l["kind"] == "incremental" for l in lines[:2]), lines
assert lines[0]["bytes_read"] == 0 and lines[1]["bytes_read"] == 65536, lines
assert lines[2]["devices"] == 2 and lines[2]["failed"] == 0, lines
PYEOF
restore_cmp "$T/all" 3 "$T/all-e1.img"
restore_cmp "$T/all" 2 "$T/all-d0.img"

# the tracker newly attached, a new generation: full backups, and why
B detach -d e >/dev/null
run_ok 6 --device e --repo "$T/all" --json
[ "$(jfield "$T/6.out" kind)" = full ] && [ "$(jfield "$T/6.out" reason)" = "tracker newly attached" ] ||
	fail "after attach: $(cat "$T/6.out")"
G1=$(B cbtinfo -d e | kv generation_id)
B device_resize -d e -s 40M >/dev/null
run_ok 7 --device e --repo "$T/all" --json
G2=$(B cbtinfo -d e | kv generation_id)
[ "$G1" != "$G2" ] || fail "the resize kept generation $G1"
[ "$(jfield "$T/7.out" kind)" = full ] && [ "$(jfield "$T/7.out" reason)" = "generation changed: $G1 -> $G2" ] ||
	fail "after a resize: $(cat "$T/7.out")"

# --keep-last: the backups, then a prune line; e's older backups are gone,
# d's stay (the policy is the run's device's)
run_ok 8 --device e --repo "$T/all" --keep-last 1
grep -q "^prune=$T/all removed=4 kept=1 " "$T/8.out" || fail "run --keep-last: $(cat "$T/8.out")"
"$BACKUP" list --repo "$T/all" | grep -c "device=e" | grep -qx 1 || fail "after run --keep-last 1: $("$BACKUP" list --repo "$T/all")"
"$BACKUP" list --repo "$T/all" | grep -c "device=d" | grep -qx 2 || fail "run --device e pruned d: $("$BACKUP" list --repo "$T/all")"
restore_cmp "$T/all" 2 "$T/all-d0.img"
clean

# bad command lines: exit 2, one line
bad() {
	_rc=0; "$BACKUP" "$@" >"$T/out" 2>"$T/err" || _rc=$?
	[ "$_rc" = 2 ] || fail "'$*': exit $_rc, not 2: $(cat "$T/err")"
	[ "$(wc -l <"$T/err")" = 1 ] || fail "'$*': not one line: $(cat "$T/err")"
	[ ! -s "$T/out" ] || fail "'$*' printed: $(cat "$T/out")"
}
bad run --device d
bad run --repo "$R"
bad run --device d --all --repo "$R"
bad run --device "" --repo "$R"
bad run --device d --repo "$R" --limit lots
bad run --device d --repo "$R" --limit 0
bad run --device d --repo "$R" --from "$(uri d-image)"
bad run --device d --repo "$R" --bitmap b0
bad run --device d --repo "$R" --at 1
bad run --device d --repo "$R" --bogus
bad run --device d --repo "$R" extra
bad run --device
bad run --device d --repo "$R" --repo-version 1
bad run --device d --repo "$R" --dry-run
bad list --repo "$R" --all
clean
[ "$(backups "$R")" = 4 ] || fail "bad command lines changed the repository"
bdf_stop
