#!/bin/bash
# bdfilter-backup's bad inputs: each gets one line on stderr and exit 1 (2 for
# a bad command line), and leaves the repository exactly as it was: a server
# that is not there, a wrong export, a missing bitmap, a stale generation, a
# snapshot that is not newer, damaged data, index, manifests and repo.json,
# a FIFO in place of any of them,
# a backup number that does not exist, a restore target too small or of the
# wrong kind, a repository in use, and a backup killed half way.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-io nbdcopy flock nbdkit
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

BLK=65536
mkimage "$T/d.img" 16
truncate -s 1G "$T/diff.img"
truncate -s 8M "$T/small.img"
bdf_start --device "d=$T/d.img,filter=tracker" --device "small=$T/small.img"
R="$T/repo"
IMG=$(uri d-image)

# repo_sum DIR: every name and every byte in it (the lock file aside)
repo_sum() { (cd "$1" && find . ! -name lock | sort && find . -type f ! -name lock -print0 | sort -z | xargs -0 cat) | md5sum; }
# bad STATUS PATTERN CMD...: fails with STATUS, one stderr line matching PATTERN, $R unchanged
bad() {
	_want=$1 _pat=$2; shift 2
	_before=$(repo_sum "$R")
	_rc=0; "$BACKUP" "$@" >"$T/out" 2>"$T/err" || _rc=$?
	[ "$_rc" = "$_want" ] || fail "'$*' exited $_rc, expected $_want: $(cat "$T/err")"
	[ "$(wc -l <"$T/err")" = 1 ] || fail "'$*': not one line on stderr: $(cat "$T/err")"
	grep -q "^bdfilter-backup: .*$_pat" "$T/err" || fail "'$*': expected '$_pat', got: $(cat "$T/err")"
	[ "$(repo_sum "$R")" = "$_before" ] || fail "'$*' changed the repository"
	bdf_alive
}

id=$(snap d "$T/diff.img")
# A version 1 repository: its damage cases are below (backup2-bad.sh has
# version 2's).
"$BACKUP" full --from "$IMG" --repo "$R" --repo-version 1 --quiet >/dev/null || fail "the first full backup"
nbdcopy "$IMG" "$T/ref0.img"

# the command line
bad 2 "unknown option" full --from "$IMG" --repo "$R" --frobnicate
bad 2 "needs --repo" list
bad 2 "needs --from" full --repo "$R"
bad 2 "connections" full --from "$IMG" --repo "$R" --connections 0
bad 2 "connections" full --from "$IMG" --repo "$R" --connections 65
bad 2 "at" restore --repo "$R" --at -1 --to "$T/x.img"
bad 2 "at" restore --repo "$R" --at 1x --to "$T/x.img"
bad 2 "needs --to" restore --repo "$R"
bad 2 "unknown command" backup --repo "$R"
bad 2 "block size is the repository" incremental --from "$IMG" --repo "$R" --block-size 4096
bad 1 "block size" full --from "$IMG" --repo "$T/r-bs" --block-size 1000
[ ! -e "$T/r-bs/repo.json" ] || fail "a repository was made with a bad block size"

# the server's side
bad 1 "cannot connect" full --from "nbd+unix:///d-image?socket=$T/nothing.sock" --repo "$R"
bad 1 "cannot connect" incremental --from "$(uri no-such-export)" --repo "$R"
bad 1 "not newer\|take a new snapshot" incremental --from "$IMG" --repo "$R"
bad 1 "does not offer" incremental --from "$IMG" --repo "$R" --bitmap no-such-bitmap
bad 1 "not a bdfilterd snapshot image\|--bitmap" incremental --from "$(uri d)" --repo "$R"
B snapshot_destroy -i "$id"
# a new generation: the tracker detached and attached again
B detach -d d >/dev/null
B attach -d d >/dev/null
io d "write -P 1 0 4096"
id=$(snap d "$T/diff.img")
bad 1 "generation changed.*run full" incremental --from "$IMG" --repo "$R"
B snapshot_destroy -i "$id"

# the repository's side
bad 1 "No such file\|not a bdfilter-backup repository" incremental --from "$IMG" --repo "$T/missing"
mkdir "$T/empty"
bad 1 "not a bdfilter-backup repository" list --repo "$T/empty"
bad 1 "no backup 99" restore --repo "$R" --at 99 --to "$T/x.img"
[ ! -e "$T/x.img" ] || fail "a restore of a backup that does not exist made its target"
mkdir -p "$T/notempty" && echo hello >"$T/notempty/file"
_rc=0; "$BACKUP" full --from "$(uri d)" --repo "$T/notempty" 2>"$T/err" >/dev/null || _rc=$?
[ $_rc = 1 ] && grep -q "not empty" "$T/err" || fail "full into a directory of other files: $_rc $(cat "$T/err")"

# restore targets
bad 1 "too small" restore --repo "$R" --to "$(uri small)"
nbdcopy "$(uri small)" "$T/small-after.img"
cmp "$T/small-after.img" "$T/small.img" || fail "a refused restore wrote to its target"
[ "$(stat -c %s "$T/small.img")" = $((8 << 20)) ] || fail "the small export was resized"
bad 1 "Is a directory" restore --repo "$R" --to "$T"
bad 1 "too small" restore --repo "$R" --to "$(uri small)"

# in use: another process holds the lock
flock -o "$R/lock" sleep 3 &
holder=$!
sleep 0.3
bad 1 "in use" full --from "$(uri d)" --repo "$R"
kill $holder 2>/dev/null || true
wait $holder 2>/dev/null || true

# damage: each on a copy of the repository
damaged() { rm -rf "$T/dmg" && cp -a "$R" "$T/dmg"; }
damaged
printf 'X' | dd of="$T/dmg/000000/data" bs=1 seek=$((5 * BLK + 17)) conv=notrunc status=none
_rc=0; "$BACKUP" verify --repo "$T/dmg" >"$T/out" 2>"$T/err" || _rc=$?
[ $_rc = 1 ] || fail "verify of damaged data exited $_rc"
# the data file holds blocks in the order they arrived: find which one it hit
blk=$(sed -n "s/^error=backup 0: block \([0-9]*\) (data offset $((5 * BLK))): checksum mismatch$/\1/p" "$T/out")
[ -n "$blk" ] && [ "$(grep -c '^error=' "$T/out")" = 1 ] || fail "verify did not name the one damaged block: $(cat "$T/out")"
_rc=0; "$BACKUP" restore --repo "$T/dmg" --to "$T/x.img" 2>"$T/err" >/dev/null || _rc=$?
[ $_rc = 1 ] && grep -q "block $blk does not match its checksum" "$T/err" || fail "restore of damaged data: $_rc $(cat "$T/err")"

damaged
truncate -s -10 "$T/dmg/000000/index"
R="$T/dmg" bad 1 "index does not match its checksum" restore --repo "$T/dmg" --to "$T/x.img"
_rc=0; "$BACKUP" verify --repo "$T/dmg" >"$T/out" 2>/dev/null || _rc=$?
[ $_rc = 1 ] && grep -q "^error=backup 0: 000000/index" "$T/out" || fail "verify of a truncated index: $(cat "$T/out")"

damaged
truncate -s -1 "$T/dmg/000000/data"
R="$T/dmg" bad 1 "truncated" restore --repo "$T/dmg" --to "$T/x.img"

damaged
echo '{ "backup": 0, "kind": ' >"$T/dmg/000000/manifest.json"
R="$T/dmg" bad 1 "manifest.json is not a JSON object" list --repo "$T/dmg"
R="$T/dmg" bad 1 "manifest.json" restore --repo "$T/dmg" --to "$T/x.img"

damaged
sed -i 's/"block_size": *65536/"block_size": 4096/' "$T/dmg/000000/manifest.json"
R="$T/dmg" bad 1 "block_size" list --repo "$T/dmg"

# a FIFO in place of a file: refused at once, never waited on
for f in repo.json 000000/manifest.json 000000/index 000000/data; do
	damaged
	rm -f "$T/dmg/$f"
	mkfifo "$T/dmg/$f"
	_rc=0; timeout 30 "$BACKUP" restore --repo "$T/dmg" --to "$T/x.img" >/dev/null 2>"$T/err" || _rc=$?
	[ $_rc = 1 ] && grep -q "$f: not a regular file" "$T/err" || fail "$f as a FIFO: exit $_rc: $(cat "$T/err")"
done

damaged
echo '{ "format": "something else" }' >"$T/dmg/repo.json"
R="$T/dmg" bad 1 "repo.json: not a version 1" verify --repo "$T/dmg"

damaged
mkdir "$T/dmg/000005"
R="$T/dmg" bad 1 "backup 1 is missing" list --repo "$T/dmg"

# kill -9 half way through a full backup (from nbdkit, slowed down so that
# half way lasts): no backup appears, and the next one works and leaves no
# temporary directory behind
_before=$(repo_sum "$R")
nbdkit --exit-with-parent --unix "$T/slow.sock" --filter=delay file "$T/d.img" rdelay=100ms 2>"$T/nbdkit.log" &
slow=$!
wait_for_socket "$T/slow.sock"
"$BACKUP" full --from "nbd+unix:///?socket=$T/slow.sock" --repo "$T/bigrepo" --repo-version 1 --connections 1 --quiet >/dev/null 2>&1 &
bk=$!
for _ in $(seq 100); do [ -s "$T/bigrepo/.tmp-000000/data" ] && break; sleep 0.02; done
[ -s "$T/bigrepo/.tmp-000000/data" ] || fail "the slowed backup wrote no data in 2 s"
kill -9 $bk
wait $bk 2>/dev/null || true
[ -z "$(find "$T/bigrepo" -maxdepth 1 -name '0*')" ] || fail "a killed backup left a backup in the repository"
"$BACKUP" list --repo "$T/bigrepo" | grep -q "^backup=" && fail "list shows the killed backup"
kill $slow 2>/dev/null || true  # (nbdkit 1.32 may abort when its client dies)
wait $slow 2>/dev/null || true
id=$(snap d "$T/diff.img")
"$BACKUP" full --from "$IMG" --repo "$T/bigrepo" --quiet >/dev/null || fail "the backup after a killed one"
[ -z "$(find "$T/bigrepo" -name '.tmp-*')" ] || fail "the killed backup's temporary directory is left"
"$BACKUP" verify --repo "$T/bigrepo" >/dev/null || fail "verify after a killed backup"
[ "$("$BACKUP" list --repo "$T/bigrepo" | grep -c '^backup=')" = 1 ] || fail "not one backup after a killed one"
B snapshot_destroy -i "$id"

[ "$(repo_sum "$R")" = "$_before" ] || fail "the repository changed"
"$BACKUP" verify --repo "$R" >"$T/out" 2>&1 || fail "verify of the repository at the end: $(cat "$T/out")"
"$BACKUP" restore --repo "$R" --to "$T/end.img" >/dev/null || fail "restore at the end"
cmp "$T/end.img" "$T/ref0.img" || fail "the repository no longer restores backup 0"
bdf_stop
