#!/bin/bash
# Bad input to a version 2 repository, each a clear one-line error, exit 1,
# and the repository as it was (or still restorable): a wrong, missing or
# needless key; a tampered, truncated or missing chunk, pack, index, map and
# manifest, each found by restore (which writes nothing after it) and named by
# verify --deep; a manifest moved to another number; a repository of an
# unknown version; a full disk mid-backup; kill -9 mid-backup; two backups
# into one repository at once; bad option values.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy nbdkit
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

truncate -s 32M "$T/d.img"
head -c 8M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
printf 'the right key, 1\n' >"$T/key"
printf 'the wrong key, 2\n' >"$T/wrong"
bdf_start --device "d=$T/d.img"
U=$(uri d)

# bad CODE PATTERN ARGS...: bdfilter-backup ARGS exits CODE with one line matching PATTERN
bad() {
	_code=$1 _pat=$2; shift 2
	_rc=0; "$BACKUP" "$@" >"$T/out" 2>"$T/err" || _rc=$?
	[ "$_rc" = "$_code" ] || fail "'$*': exit $_rc, expected $_code: $(cat "$T/err")"
	grep -q -- "$_pat" "$T/err" || fail "'$*': expected '$_pat', got: $(cat "$T/err")"
	[ "$(grep -vc 'warning: .* is writable' "$T/err")" -le 12 ] || fail "'$*': too many lines: $(cat "$T/err")"
}
ok() { "$BACKUP" "$@" >"$T/out" 2>"$T/err" || fail "'$*': $(cat "$T/err")"; }
# a checksum of every file of a repository but its lock files
repo_sum() { (cd "$1" && find . -type f ! -name 'lock*' -print0 | sort -z | xargs -0 sha256sum) | sha256sum; }

for mode in plain keyed; do
	R="$T/r-$mode"
	K=; [ $mode = keyed ] && K="--key-file $T/key"
	ok full --from "$U" --repo "$R" --device d $K --quiet
	ok full --from "$U" --repo "$R" --device d2 $K --quiet
	"$BACKUP" restore --repo "$R" --at 0 --to "$T/ref.img" $K --quiet >/dev/null
	cmp "$T/ref.img" "$T/d.img" || fail "$mode: the first restore differs"
	S=$(repo_sum "$R")

	# keys
	if [ $mode = keyed ]; then
		bad 1 "wrong key" list --repo "$R" --key-file "$T/wrong"
		rm -f "$T/x.img"
		bad 1 "wrong key" restore --repo "$R" --to "$T/x.img" --key-file "$T/wrong"
		[ ! -e "$T/x.img" ] || fail "a restore with the wrong key made its target"
		bad 1 "encrypted: give its key with --key-file" list --repo "$R"
		bad 1 "encrypted: give its key" full --from "$U" --repo "$R" --device d
		: >"$T/short"; bad 1 "at least 8 bytes" list --repo "$R" --key-file "$T/short"
		bad 1 "No such file" list --repo "$R" --key-file "$T/nokey"
		bad 1 "not a regular file" list --repo "$R" --key-file "$T"
	else
		bad 1 "not encrypted" list --repo "$R" --key-file "$T/key"
	fi
	[ "$(repo_sum "$R")" = "$S" ] || fail "$mode: a refused command changed the repository"

	# damage: one at a time, on a copy
	pack=$(find "$R/packs" -type f | head -1)
	index=$(find "$R/index" -type f | head -1)
	damage() { # NAME what-to-do: copy the repository to $D and break it
		D="$T/dmg"; rm -rf "$D"; cp -a "$R" "$D"
	}
	flip() { # FILE OFFSET: flip one byte
		$PY -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0x40]))' "$1" "$2"
	}
	# a tampered chunk in a pack: restore stops at it, verify --deep names it
	damage; flip "$D/${pack#$R/}" 100000
	bad 1 "block [0-9]*: chunk [0-9a-f]* in packs/.*\(fails authentication\|does not match its \(id\|checksum\)\|does not decompress\)" \
		restore --repo "$D" --at 0 --to "$T/x.img" $K --quiet
	bad 1 "damaged" verify --repo "$D" --deep $K
	grep -q "block 1: chunk\|fails authentication\|does not match its id" "$T/out" || fail "$mode: verify --deep: $(cat "$T/out")"
	ok verify --repo "$D" $K # (the fast verify checks presence, not bytes)
	# a truncated pack
	damage; truncate -s 1000000 "$D/${pack#$R/}"
	bad 1 "damaged" verify --repo "$D" $K
	grep -q "too short (truncated)" "$T/out" || fail "$mode: verify of a truncated pack: $(cat "$T/out")"
	bad 1 "cannot be read\|too short" restore --repo "$D" --at 0 --to "$T/x.img" $K --quiet
	# a missing pack
	damage; rm "$D/${pack#$R/}"
	bad 1 "damaged" verify --repo "$D" $K
	grep -q "packs/.* is missing" "$T/out" || fail "$mode: verify of a missing pack: $(cat "$T/out")"
	bad 1 "pack missing" restore --repo "$D" --at 0 --to "$T/x.img" $K --quiet
	# a tampered index: its name no longer matches its bytes
	damage; flip "$D/${index#$R/}" 40
	bad 1 "do not match its name" verify --repo "$D" $K
	# a missing index: its chunks are missing
	damage; rm "$D/${index#$R/}"
	bad 1 "in no index (missing)" restore --repo "$D" --at 0 --to "$T/x.img" $K --quiet
	# tampered and missing maps (every map: an encrypted manifest does not
	# say which is backup 0's)
	damage; for m in "$D"/maps/*; do flip "$m" 30; done
	bad 1 "maps/.*: damaged" restore --repo "$D" --at 0 --to "$T/x.img" $K --quiet
	damage; rm "$D"/maps/*
	bad 1 "maps/.*: missing" restore --repo "$D" --at 0 --to "$T/x.img" $K --quiet
	# a tampered manifest, and one moved to another number
	damage
	if [ $mode = keyed ]; then
		flip "$D/backups/000000.json" 20
		bad 1 "backup 0: backups/000000.json fails authentication" restore --repo "$D" --at 0 --to "$T/x.img" $K
		damage; cp "$D/backups/000000.json" "$D/backups/000007.json"
		bad 1 "backup 7: backups/000007.json fails authentication" restore --repo "$D" --at 7 --to "$T/x.img" $K
	else
		sed -i 's/"size":/"size":1/' "$D/backups/000000.json"
		bad 1 "backup 0: backups/000000.json: \"blocks\" is missing or wrong" restore --repo "$D" --at 0 --to "$T/x.img"
		damage; cp "$D/backups/000000.json" "$D/backups/000007.json"
		bad 1 "backup 7: backups/000007.json: \"backup\" is missing or wrong" restore --repo "$D" --at 7 --to "$T/x.img"
	fi
	# the other backup restores in every damaged copy of a manifest
	ok restore --repo "$D" --at 1 --to "$T/x.img" $K --quiet
	cmp "$T/x.img" "$T/d.img" || fail "$mode: backup 1 of a repository with a bad manifest 0"
	[ "$(repo_sum "$R")" = "$S" ] || fail "$mode: the repository changed"
done

R="$T/r-plain"
# versions
D="$T/v9"; mkdir "$D"; echo '{ "format": "bdfilter-backup", "version": 9, "block_size": 65536 }' >"$D/repo.json"
bad 1 "not a version 1 or 2" list --repo "$D"
bad 1 "not a version 1 or 2" full --from "$U" --repo "$D"
"$BACKUP" full --from "$U" --repo "$T/v1" --repo-version 1 --quiet >/dev/null
bad 1 "version 1 repository: this command needs version 2" prune --repo "$T/v1" --keep-last 1
bad 1 "has no --device" full --from "$U" --repo "$T/v1" --device d
bad 1 "not encrypted" restore --repo "$T/v1" --to "$T/x.img" --key-file "$T/key"

# options
bad 2 "compress-level" full --from "$U" --repo "$T/n" --compress-level 20
bad 2 "compress-level" full --from "$U" --repo "$T/n" --compress-level x
bad 2 "repo-version" full --from "$U" --repo "$T/n" --repo-version 3
bad 2 "--at and --device" restore --repo "$R" --to "$T/x.img" --at 0 --device d
bad 1 "no usable backup of nosuch" restore --repo "$R" --to "$T/x.img" --device nosuch
bad 1 "holds one device" restore --repo "$T/v1" --to "$T/x.img" --device d
bad 2 "an S3 repository is version 2" full --from "$U" --repo s3://b/p --repo-version 1
bad 2 "writers" restore --repo "$R" --to "$T/x.img" --writers 0
bad 2 "writers" restore --repo "$R" --to "$T/x.img" --writers 17
bad 2 "keep-last" prune --repo "$R" --keep-last -1
bad 2 "takes no --keep" list --repo "$R" --keep-last 1
bad 2 "takes no --deep" list --repo "$R" --deep
bad 2 "are for the full backup" incremental --from "$U" --repo "$R" --compress-level 3
bad 1 "a name of 1 to 255" full --from "$U" --repo "$R" --device "$(printf 'a\tb')"
[ ! -e "$T/n" ] || fail "a refused command made a repository"

# two backups into one repository at once: the second is refused, the first
# finishes (a slowed source keeps it going; it holds lock.append meanwhile)
nbdkit --exit-with-parent --unix "$T/slow.sock" --filter=delay file "$T/d.img" rdelay=3 2>"$T/nbdkit.log" &
slow=$!
wait_for_socket "$T/slow.sock"
"$BACKUP" full --from "nbd+unix:///?socket=$T/slow.sock" --repo "$R" --device slow --connections 1 --quiet >/dev/null 2>"$T/first.err" &
first=$!
for _ in $(seq 1200); do flock -n "$R/lock.append" true || break; sleep 0.05; done
flock -n "$R/lock.append" true && fail "the slowed backup did not take the repository in 60 s"
bad 1 "in use: another backup" full --from "$U" --repo "$R" --device d
bad 1 "in use" prune --repo "$R" --keep-last 1
ok list --repo "$R" # readers are welcome meanwhile
wait $first || fail "the first backup: $(cat "$T/first.err")"
kill $slow 2>/dev/null || true; wait $slow 2>/dev/null || true
ok list --repo "$R" --json
grep -q '"slow"' "$T/out" || fail "the first backup is not listed"

# killed once its pack is stored, before its index, map and manifest: no
# backup appears; gc removes the pack; the next backup works
echo 'new data' | dd of="$T/d.img" bs=1 seek=$((20 << 20)) conv=notrunc status=none
_rc=0; BDFILTER_BACKUP_CRASH=pack "$BACKUP" full --from "$U" --repo "$R" --device crashed --quiet >/dev/null 2>&1 || _rc=$?
[ $_rc = 137 ] || fail "the crash point did not kill the backup: exit $_rc"
ok list --repo "$R" --json
grep -q '"crashed"' "$T/out" && fail "list shows the killed backup"
ok prune --repo "$R" --json
[ "$(jfield "$T/out" packs_removed)" = 1 ] || fail "gc did not remove the killed backup's pack: $(cat "$T/out")"
ok verify --repo "$R" --deep
ok full --from "$U" --repo "$R" --device crashed --quiet

# a full disk mid-backup: the backup fails with ENOSPC, nothing appears, the
# repository still restores and the next backup (with room) works
mkdir "$T/small"
mount -t tmpfs -o size=4M tmpfs "$T/small" 2>/dev/null || skip "cannot mount a tmpfs (not root?)"
trap 'umount "$T/small" 2>/dev/null || true; _bdf_cleanup' EXIT
"$BACKUP" full --from "$U" --repo "$T/small/r" --device d --compress-level 0 --quiet >/dev/null 2>"$T/err" && fail "a backup of 8 MiB fit into 4 MiB"
grep -q "No space left on device" "$T/err" || fail "full disk: $(cat "$T/err")"
[ "$(wc -l <"$T/err")" -le 2 ] || fail "full disk: many lines: $(cat "$T/err")"
[ -z "$(ls "$T/small/r/backups" 2>/dev/null)" ] || fail "a backup appeared on a full disk"
umount "$T/small"
bdf_stop
