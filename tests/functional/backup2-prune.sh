#!/bin/bash
# prune of a version 2 repository: --keep-last per device, --dry-run that
# removes nothing, gc that removes the packs only forgotten backups used and
# rewrites the mostly dead ones; and prune killed (SIGKILL) at each of its
# steps: every backup that is still listed restores byte for byte, verify
# --deep passes, and the next prune finishes the job with the same result as
# an uninterrupted one.
. "$BDF_SRCDIR/tests/functional/lib.sh"
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

truncate -s 32M "$T/d.img" "$T/e.img"
head -c 8M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
head -c 2M /dev/urandom | dd of="$T/e.img" conv=notrunc status=none
bdf_start --device "d=$T/d.img" --device "e=$T/e.img"
R="$T/repo"
ok() { "$BACKUP" "$@" >"$T/out" 2>"$T/err" || fail "'$*': $(cat "$T/err")"; }
full() { ok full --from "$(uri "$1")" --repo "$R" --device "$1" --quiet; cp "$T/$1.img" "$T/ref$2.img"; }

# 0: 8 MiB; 1: its first 4 MiB new; 2: its first 2 MiB new again; 3: e
full d 0
head -c 4M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
full d 1
head -c 2M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
full d 2
full e 3
repo_sum() { (cd "$1" && find . -type f ! -name 'lock*' -print0 | sort -z | xargs -0 sha256sum) | sha256sum; }
restores() { # REPO: every listed backup restores to its reference
	"$BACKUP" list --repo "$1" --json >"$T/l.json" || fail "list of $1"
	for n in $($PY -c 'import json,sys; print(" ".join(str(b["backup"]) for b in json.load(open(sys.argv[1]))["backups"]))' "$T/l.json"); do
		"$BACKUP" restore --repo "$1" --at "$n" --to "$T/x.img" --quiet >/dev/null 2>"$T/err" || fail "restore --at $n of $1: $(cat "$T/err")"
		cmp "$T/x.img" "$T/ref$n.img" || fail "backup $n of $1 differs"
	done
	"$BACKUP" verify --repo "$1" --deep >"$T/v" 2>&1 || fail "verify --deep of $1: $(cat "$T/v")"
}
listed() { "$BACKUP" list --repo "$1" | sed -n 's/^backup=\([0-9]*\) .*/\1/p' | tr '\n' ' '; }

S=$(repo_sum "$R")
ok prune --repo "$R" --keep-last 1 --dry-run --json
[ "$(jfield "$T/out" removed)" = "[0, 1]" ] || fail "dry run: removed $(jfield "$T/out" removed)"
[ "$(repo_sum "$R")" = "$S" ] || fail "a dry run changed the repository"
[ "$(jfield "$T/out" repacked_chunks)" = 96 ] || fail "dry run: $(cat "$T/out")"

# killed at each step, on a copy each time
for point in prune-forget gc-repack gc-index gc-sweep-index gc-sweep-indexes-done gc-sweep-pack; do
	D="$T/c-$point"; cp -a "$R" "$D"
	_rc=0; BDFILTER_BACKUP_CRASH=$point "$BACKUP" prune --repo "$D" --keep-last 1 >/dev/null 2>"$T/err" || _rc=$?
	[ $_rc = 137 ] || fail "$point: prune was not killed there (exit $_rc): $(cat "$T/err")"
	restores "$D"
	ok prune --repo "$D" --keep-last 1
	restores "$D"
	[ "$(listed "$D")" = "2 3 " ] || fail "$point: after the second prune: $(listed "$D")"
done

ok prune --repo "$R" --keep-last 1 --json
[ "$(jfield "$T/out" removed)" = "[0, 1]" ] && [ "$(jfield "$T/out" kept)" = "[2, 3]" ] || fail "prune: $(cat "$T/out")"
# backup 0's pack: half of it live (blocks 64-127) and rewritten; backup 1's:
# half of it overwritten by backup 2, rewritten too
[ "$(jfield "$T/out" repacked_chunks)" = 96 ] || fail "prune rewrote $(jfield "$T/out" repacked_chunks) chunks: $(cat "$T/out")"
[ "$(jfield "$T/out" maps_removed)" = 2 ] || fail "prune removed $(jfield "$T/out" maps_removed) maps"
restores "$R"
ok info --repo "$R" --json
# what is left: d's 8 MiB and e's 2 MiB, each chunk once
[ "$(jfield "$T/out" unique_bytes)" = $((10 << 20)) ] || fail "after prune: $(cat "$T/out")"
pack_bytes=$(jfield "$T/out" pack_bytes)
[ "$pack_bytes" -lt $((11 << 20)) ] || fail "after prune the packs hold $pack_bytes bytes"
# a second prune finds nothing to do
ok prune --repo "$R" --keep-last 1 --json
[ "$(jfield "$T/out" packs_removed)" = 0 ] && [ "$(jfield "$T/out" repacked_chunks)" = 0 ] || fail "a second prune: $(cat "$T/out")"
# --device: only that device's backups
ok full --from "$(uri e)" --repo "$R" --device e --quiet; cp "$T/e.img" "$T/ref4.img"
ok prune --repo "$R" --keep-last 1 --device d --json
[ "$(jfield "$T/out" kept)" = "[2]" ] || fail "prune --device d: $(cat "$T/out")"
ok prune --repo "$R" --keep-last 1 --device e --json
[ "$(jfield "$T/out" removed)" = "[3]" ] || fail "prune --device e: $(cat "$T/out")"
restores "$R"
bdf_stop
