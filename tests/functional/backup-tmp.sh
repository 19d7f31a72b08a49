#!/bin/bash
# bdfilter-backup removes only the .tmp-NNNNNN it leaves itself: a directory
# of a backup's files. Whatever else is named .tmp-* (a symlink to a
# directory or to a file outside the repository, a regular file, a directory
# with other files, a subdirectory or a symlink in it) is left alone with one
# warning line naming it, nothing outside the repository changes, and the
# backup goes on. One in the way of the next backup's name fails it, and
# still is not followed.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdcopy
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

mkimage "$T/d.img" 4
truncate -s 64M "$T/diff.img"
bdf_start --device "d=$T/d.img,filter=tracker"
R="$T/repo"
IMG=$(uri d-image)
id=$(snap d "$T/diff.img")
# .tmp-NNNNNN directories are version 1's way of building a backup
"$BACKUP" full --from "$IMG" --repo "$R" --repo-version 1 --quiet >/dev/null 2>"$T/err" || fail "the first full backup: $(cat "$T/err")"
nbdcopy "$IMG" "$T/ref.img"

# What the repository's .tmp-* must not reach: a directory of files (one in a
# subdirectory) and a file, outside it.
mkdir -p "$T/outside/sub"
head -c 100000 /dev/urandom >"$T/outside/a"
echo hello >"$T/outside/sub/b"
echo precious >"$T/precious"
# outside_sum: every name and every byte of them
outside_sum() { (cd "$T" && find outside precious | sort && find outside precious -type f | sort | xargs cat) | md5sum; }
before=$(outside_sum)

ln -s "$T/outside" "$R/.tmp-000005"
ln -s "$T/precious" "$R/.tmp-000006"
echo x >"$R/.tmp-000008"
mkdir "$R/.tmp-000009" && echo x >"$R/.tmp-000009/notes"
mkdir -p "$R/.tmp-000010/sub" && : >"$R/.tmp-000010/data"
mkdir "$R/.tmp-000011" && ln -s "$T/precious" "$R/.tmp-000011/data"
mkdir "$R/.tmp-backup"
foreign=".tmp-000005 .tmp-000006 .tmp-000008 .tmp-000009 .tmp-000010 .tmp-000011 .tmp-backup"
# leftovers of interrupted runs: the data file alone, and everything a
# backup writes (the temporary names included)
mkdir "$R/.tmp-000007" && head -c 65536 /dev/urandom >"$R/.tmp-000007/data"
mkdir "$R/.tmp-000012"
for f in data index manifest.json .index.tmp .manifest.json.tmp; do echo "$f" >"$R/.tmp-000012/$f"; done

# a full backup cleans up: the leftovers go, the rest stays, one warning each
"$BACKUP" full --from "$IMG" --repo "$R" --quiet >/dev/null 2>"$T/err" || fail "full with .tmp-* entries: $(cat "$T/err")"
[ "$(outside_sum)" = "$before" ] || fail "cleaning the repository's .tmp-* changed files outside it"
for f in $foreign; do
	[ -e "$R/$f" ] || [ -L "$R/$f" ] || fail "$f was removed"
	[ "$(grep -c "^bdfilter-backup: warning: $R/$f[: ]" "$T/err")" = 1 ] || fail "not one warning for $f: $(cat "$T/err")"
done
[ "$(wc -l <"$T/err")" = 7 ] || fail "other lines on stderr: $(cat "$T/err")"
grep -q "$R/.tmp-000005 .*(a symbolic link)" "$T/err" || fail "the warning does not say it is a symlink: $(cat "$T/err")"
[ -L "$R/.tmp-000005" ] && [ -L "$R/.tmp-000006" ] && [ -L "$R/.tmp-000011/data" ] || fail "a symlink was replaced"
[ -f "$R/.tmp-000009/notes" ] && [ -f "$R/.tmp-000010/data" ] && [ -d "$R/.tmp-000010/sub" ] ||
	fail "the content of a foreign .tmp-* directory was removed"
[ ! -e "$R/.tmp-000007" ] || fail "the leftover .tmp-000007 is still there"
[ ! -e "$R/.tmp-000012" ] || fail "the leftover .tmp-000012 is still there"

# list and verify take the shared lock: they remove nothing and see no backup in .tmp-*
"$BACKUP" list --repo "$R" >"$T/out" 2>"$T/err" || fail "list: $(cat "$T/err")"
[ "$(grep -c '^backup=' "$T/out")" = 2 ] && [ ! -s "$T/err" ] || fail "list: $(cat "$T/out" "$T/err")"
"$BACKUP" verify --repo "$R" >"$T/out" 2>"$T/err" || fail "verify: $(cat "$T/out" "$T/err")"
[ ! -s "$T/err" ] || fail "verify said: $(cat "$T/err")"
[ "$(outside_sum)" = "$before" ] || fail "list or verify changed files outside the repository"

# in the way of backup 2's name: a symlink to the outside directory, then a
# symlink to the file; the backup fails and follows neither
for target in "$T/outside" "$T/precious"; do
	ln -s "$target" "$R/.tmp-000002"
	_rc=0; "$BACKUP" full --from "$IMG" --repo "$R" --quiet >/dev/null 2>"$T/err" || _rc=$?
	[ $_rc = 1 ] || fail "full with a symlink .tmp-000002 -> $target exited $_rc: $(cat "$T/err")"
	grep -q "^bdfilter-backup: .*\.tmp-000002.*exists" "$T/err" || fail "no error for .tmp-000002: $(cat "$T/err")"
	[ "$(outside_sum)" = "$before" ] || fail "a backup followed .tmp-000002 -> $target"
	[ -L "$R/.tmp-000002" ] || fail "the symlink .tmp-000002 -> $target was removed"
	rm "$R/.tmp-000002"
done
[ -z "$(find "$R" -maxdepth 1 -name '00000[2-9]')" ] || fail "a failed backup left a backup"

"$BACKUP" restore --repo "$R" --to "$T/r.img" >/dev/null || fail "restore"
cmp "$T/ref.img" "$T/r.img" || fail "the restored image differs"
[ "$(outside_sum)" = "$before" ] || fail "files outside the repository changed"
B snapshot_destroy -i "$id"
bdf_stop
