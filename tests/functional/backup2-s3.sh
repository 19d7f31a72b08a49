#!/bin/bash
# bdfilter-backup's repository version 2 on S3 (s3rver behind the SigV4-checking
# proxy, s3-lib.sh): a full backup of a bdfilterd device into s3://BUCKET/PREFIX,
# listed, restored with several writers byte for byte, verified --deep; a
# second full of the unchanged device stores no chunk; no lock object is left.
# Then incrementals from snapshots, an encrypted repository, prune, serve; the server
# killed in the middle of a backup (a clear error, no backup appears, the next
# one works); a wrong secret and an endpoint that answers garbage (one line,
# exit 1).
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/s3-lib.sh"
[ -x "$BACKUP" ] || fail "$BACKUP was not built"
: "${STORE_TOOL:?STORE_TOOL must point at store_tool}"

s3_start
REPO="s3://$S3_BUCKET/repos/one"
truncate -s 64M "$T/d.img"
head -c 12M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
head -c 3M /dev/urandom | dd of="$T/d.img" bs=1M seek=40 conv=notrunc status=none
bdf_start --device "d=$T/d.img,filter=tracker"

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

# incrementals from snapshots, encrypted, then prune
printf 'an s3 key, long enough\n' >"$T/key"
K="--key-file $T/key"
ENC="s3://$S3_BUCKET/repos/enc"
truncate -s 256M "$T/diff.img"
id=$(snap d "$T/diff.img")
run full --from "$(uri d-image)" --repo "$ENC" $K
nbdcopy "$(uri d-image)" "$T/ref0.img"
B snapshot_destroy -i "$id"
for i in 1 2; do
	io d "write -P $i $((i * 5 << 20)) 1M"
	id=$(snap d "$T/diff.img")
	run incremental --from "$(uri d-image)" --repo "$ENC" $K
	grep -qx "blocks=16" "$T/out" || fail "incremental $i: $(cat "$T/out")"
	nbdcopy "$(uri d-image)" "$T/ref$i.img"
	B snapshot_destroy -i "$id"
done
for i in 0 1 2; do
	run restore --repo "$ENC" --at $i --to "$T/r.img" $K
	cmp "$T/r.img" "$T/ref$i.img" || fail "encrypted backup $i on S3 differs"
done
run prune --repo "$ENC" --keep-last 1 $K
grep -qx "removed=0" "$T/out" && grep -qx "removed=1" "$T/out" || fail "prune: $(cat "$T/out")"
run verify --deep --repo "$ENC" $K
grep -qx "ok=true" "$T/out" || fail "verify after prune: $(cat "$T/out")"
run restore --repo "$ENC" --at 2 --to "$T/r.img" $K
cmp "$T/r.img" "$T/ref2.img" || fail "backup 2 after prune differs"
# instant restore from S3: serve the last backup, read it with nbdcopy
mkfifo "$T/ready"
"$BACKUP" serve --repo "$ENC" $K --listen "unix:$T/serve.sock" >"$T/ready" 2>"$T/serve.err" &
spid=$!
read -r line <"$T/ready" || fail "serve from S3 did not start: $(cat "$T/serve.err")"
nbdcopy "nbd+unix:///?socket=$T/serve.sock" "$T/served.img" || fail "nbdcopy from serve"
cmp "$T/served.img" "$T/ref2.img" || fail "the backup served from S3 differs"
kill -TERM "$spid"; wait "$spid" || fail "serve from S3 did not exit 0: $(cat "$T/serve.err")"
"$STORE_TOOL" "$ENC" list "" >"$T/keys" || fail "listing"
! grep -q "quick\|^backups/000000" "$T/keys" || fail "prune left backup 0: $(cat "$T/keys")"

# the server killed in the middle of a backup: a proxy that stalls the first
# pack's upload, killed once it has it
io d "write -P 9 $((30 << 20)) 4M"
s3_proxy --stall-put "$T/stalled"
_rc=0
AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" BDFILTER_S3_TRIES=2 BDFILTER_S3_RETRY_DELAY=0.1 \
	"$BACKUP" full --from "$(uri d)" --repo "$REPO" --quiet >"$T/out" 2>"$T/err" &
bk=$!
for _ in $(seq 600); do [ -e "$T/stalled" ] && break; sleep 0.05; done
[ -e "$T/stalled" ] || fail "the backup never started its upload"
s3_kill "$S3P_PID"
wait $bk || _rc=$?
[ $_rc = 1 ] || fail "a backup whose server died: exit $_rc: $(cat "$T/err")"
[ "$(grep -cv 'warning: .* is writable' "$T/err")" -le 2 ] || fail "a dead server: many lines: $(cat "$T/err")"
run list --repo "$REPO"
[ "$(grep -c '^backup=' "$T/out")" = 2 ] || fail "the failed backup appears: $(cat "$T/out")"
run full --from "$(uri d)" --repo "$REPO"
grep -qx "backup=2" "$T/out" || fail "the backup after a dead server: $(cat "$T/out")"
run restore --repo "$REPO" --to "$T/r.img"
cmp "$T/r.img" "$T/d.img" || fail "the backup after a dead server differs"

# a wrong secret; an endpoint that answers garbage: one line, exit 1
_rc=0; AWS_SECRET_ACCESS_KEY=wrong "$BACKUP" list --repo "$REPO" >/dev/null 2>"$T/err" || _rc=$?
[ $_rc = 1 ] && grep -q "access denied" "$T/err" && [ "$(wc -l <"$T/err")" = 1 ] || fail "wrong secret: $_rc $(cat "$T/err")"
s3_proxy --garbage
_rc=0; AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" "$BACKUP" list --repo "$REPO" >/dev/null 2>"$T/err" || _rc=$?
[ $_rc = 1 ] && [ "$(wc -l <"$T/err")" -le 2 ] || fail "garbage: $_rc $(cat "$T/err")"
bdf_stop
