#!/bin/bash
# bdfilter-backup's repository version 2 on S3 (s3rver behind the SigV4-checking
# proxy, s3-lib.sh): a full backup of a bdfilterd device into s3://BUCKET/PREFIX,
# listed, restored with several writers byte for byte, verified --deep; a
# second full of the unchanged device stores no chunk; no lock object is left.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/s3-lib.sh"
[ -x "$BACKUP" ] || fail "$BACKUP was not built"
: "${STORE_TOOL:?STORE_TOOL must point at store_tool}"

s3_start
REPO="s3://$S3_BUCKET/repos/one"
truncate -s 64M "$T/d.img"
head -c 12M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
head -c 3M /dev/urandom | dd of="$T/d.img" bs=1M seek=40 conv=notrunc status=none
bdf_start --device "d=$T/d.img"

run() { "$BACKUP" "$@" >"$T/out" 2>"$T/err" || fail "$*: $(cat "$T/err")"; }
run full --from "$(uri d)" --repo "$REPO"
grep -qx "new_chunks=240" "$T/out" || fail "first full: $(cat "$T/out")"
run list --repo "$REPO"
grep -q "^backup=0 device=d kind=full" "$T/out" || fail "list: $(cat "$T/out")"
run restore --repo "$REPO" --to "$T/r.img"
cmp "$T/r.img" "$T/d.img" || fail "the restored image differs"
run verify --deep --repo "$REPO"
grep -qx "ok=true" "$T/out" || fail "verify: $(cat "$T/out")"
run full --from "$(uri d)" --repo "$REPO"
grep -qx "new_chunks=0" "$T/out" || fail "second full stored chunks: $(cat "$T/out")"
"$STORE_TOOL" "$REPO" list locks/ >"$T/locks" || fail "listing locks"
[ ! -s "$T/locks" ] || fail "lock objects left: $(cat "$T/locks")"
grep -q "^PUT /$S3_BUCKET/repos/one/" "$S3_PROXY_LOG" || fail "nothing went through the checking proxy"
! grep -q " 403$" "$S3_PROXY_LOG" || fail "a request was refused: $(grep ' 403$' "$S3_PROXY_LOG" | head -3)"
bdf_stop
