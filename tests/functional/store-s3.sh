#!/bin/bash
# The S3 object store (src/backup/store_s3.c) against a real S3 server:
# s3rver behind s3proxy.py, which checks every request's SigV4 signature and
# payload hashes (s3-lib.sh). Through store_tool: objects with and without a
# prefix, ranges, 20 MiB objects, listings past one page, the errors (wrong
# keys, no bucket, no credentials, garbage, 503s, a stall, a server killed
# mid-put) and the lock, each pair of modes, stale, renewed and raced.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3-lib.sh"
: "${STORE_TOOL:?STORE_TOOL must point at store_tool}"
ST=$STORE_TOOL
HOST=$(uname -n)
note() { echo "# [${SECONDS}s] $*"; }

s3_start
B="s3://$S3_BUCKET"
# Quick retries: the tries, not their pace, are under test.
export BDFILTER_S3_RETRY_DELAY=0.05

# run CMD...: its stdout in $T/out, stderr in $T/err, exit status in $rc.
run() { rc=0; "$@" >"$T/out" 2>"$T/err" || rc=$?; }
# expect RC [PATTERN]: of the last run.
expect() {
	[ "$rc" -eq "$1" ] || fail "exit $rc, wanted $1; stderr: $(cat "$T/err")"
	if [ -n "${2:-}" ]; then
		grep -q -- "$2" "$T/err" || fail "stderr lacks '$2': $(cat "$T/err")"
	fi
	return 0
}
lines() { wc -l <"$1" | tr -d ' '; }

note "objects, with a prefix and without"
printf 'hello, object store\n' >"$T/small"
for url in "$B" "$B/pre/fix"; do
	run "$ST" "$url" put dir/k1 "$T/small"; expect 0
	run "$ST" "$url" get dir/k1; expect 0; cmp "$T/out" "$T/small" || fail "$url: get differs"
	run "$ST" "$url" get-range dir/k1 7 6; expect 0
	[ "$(cat "$T/out")" = "object" ] || fail "$url: range read '$(cat "$T/out")'"
	run "$ST" "$url" get-range dir/k1 15 10; expect 1 "dir/k1 is shorter than 25 bytes"
	run "$ST" "$url" get-range dir/k1 100 1; expect 1 "shorter"
	run "$ST" "$url" get missing; expect 2
	[ ! -s "$T/err" ] || fail "$url: an absent object printed: $(cat "$T/err")"
	run "$ST" "$url" get-range missing 0 1; expect 2
	run "$ST" "$url" put ../x "$T/small"; expect 1 "invalid object key"
	: >"$T/empty"
	run "$ST" "$url" put dir/empty "$T/empty"; expect 0
	run "$ST" "$url" get dir/empty; expect 0; [ ! -s "$T/out" ] || fail "$url: empty object not empty"
done
# Keys live under the prefix; a store sees only its own.
run "$ST" "$B" list ""; expect 0
grep -qx "pre/fix/dir/k1 20" "$T/out" || fail "no pre/fix/dir/k1 in the bucket: $(cat "$T/out")"
grep -qx "dir/k1 20" "$T/out" || fail "no dir/k1 in the bucket"
run "$ST" "$B/pre/fix" list ""; expect 0
[ "$(cat "$T/out")" = "dir/empty 0
dir/k1 20" ] || fail "the prefixed store lists: $(cat "$T/out")"
run "$ST" "$B/pre/" list dir/; expect 0
[ "$(lines "$T/out")" -eq 0 ] || fail "s3://.../pre/ lists another's keys"
for url in "$B" "$B/pre/fix"; do
	run "$ST" "$url" del dir/k1; expect 0
	run "$ST" "$url" get dir/k1; expect 2
	run "$ST" "$url" del dir/k1; expect 0 # absent: done
	run "$ST" "$url" del dir/empty; expect 0
done

note "20 MiB objects, whole and by range"
head -c $((20 << 20)) /dev/urandom >"$T/big"
run "$ST" "$B/big" put blob "$T/big"; expect 0
run "$ST" "$B/big" get blob; expect 0; cmp "$T/out" "$T/big" || fail "20 MiB get differs"
for r in "0 1" "0 1048576" "12345678 3000000" "$(((20 << 20) - 1)) 1" "0 $((20 << 20))"; do
	set -- $r
	run "$ST" "$B/big" get-range blob "$1" "$2"; expect 0
	tail -c +$(($1 + 1)) "$T/big" | head -c "$2" | cmp - "$T/out" || fail "range $r differs"
done
run "$ST" "$B/big" get-range blob $((20 << 20)) 1; expect 1 "shorter"
grep -q "^PUT /$S3_BUCKET/big/blob 200" "$S3_PROXY_LOG" || fail "the PUT did not pass the proxy's checks"

note "1100 keys from 8 threads, listed in pages"
run "$ST" "$B/many" put-many obj 1100 8; expect 0
run "$ST" "$B/many" list obj/; expect 0
[ "$(lines "$T/out")" -eq 1100 ] || fail "listed $(lines "$T/out") of 1100"
[ "$(sort -u "$T/out" | wc -l)" -eq 1100 ] || fail "the listing repeats keys"
grep -q "continuation-token=" "$S3_PROXY_LOG" || fail "no second page was asked for"
run "$ST" "$B/many" list obj/01; expect 0
[ "$(lines "$T/out")" -eq 100 ] || fail "prefix obj/01 listed $(lines "$T/out") of 100"
run "$ST" "$B/many" get-many obj 1100 8; expect 0

note "keys, regions, buckets, credentials"
: >"$S3_PROXY_LOG"
run env AWS_SECRET_ACCESS_KEY=wrong "$ST" "$B" list ""
expect 1 "^bdfilter-backup: s3://bkt: access denied (SignatureDoesNotMatch: "
[ "$(lines "$T/err")" -eq 1 ] || fail "more than one line: $(cat "$T/err")"
[ "$(lines "$S3_PROXY_LOG")" -eq 1 ] || fail "a 403 was retried: $(cat "$S3_PROXY_LOG")"
run env AWS_ACCESS_KEY_ID=NOBODY "$ST" "$B" list ""; expect 1 "access denied (InvalidAccessKeyId: "
run env AWS_REGION=eu-west-1 "$ST" "$B" list ""; expect 1 "AuthorizationHeaderMalformed.*eu-west-1"
run "$ST" s3://no-such-bucket/p list ""; expect 1 "s3://no-such-bucket/p: no such bucket"
[ "$(lines "$T/err")" -eq 1 ] || fail "more than one line: $(cat "$T/err")"
run env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$ST" "$B" list ""; expect 1 "no AWS credentials"
[ "$(lines "$T/err")" -eq 1 ] || fail "more than one line: $(cat "$T/err")"
run "$ST" "s3://$S3_BUCKET/bad%prefix" list ""; expect 1 "invalid prefix"
# s3rver alone: does it check signatures? (3.7.1 does not: why s3proxy.py exists.)
rc=0; AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_SECRET_ACCESS_KEY=wrong "$ST" "$B" list "" >/dev/null 2>&1 || rc=$?
if [ $rc -eq 0 ]; then note "s3rver itself accepts a wrong secret (no SigV4 check); the proxy refuses it"; fi

note "a profile: ~/.aws/credentials and ~/.aws/config"
cat >"$T/credentials" <<EOF
[default]
aws_access_key_id = NOBODY
aws_secret_access_key = nothing
[ci]
aws_access_key_id = S3RVER
aws_secret_access_key = S3RVER
EOF
cat >"$T/config" <<EOF
[profile ci]
region = us-east-1
s3 =
  endpoint_url = http://127.0.0.1:$S3_PROXY_PORT
[profile far]
region = ap-south-2
endpoint_url = http://127.0.0.1:$S3_PROXY_PORT
EOF
profile() {
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_REGION -u AWS_ENDPOINT_URL \
		AWS_SHARED_CREDENTIALS_FILE="$T/credentials" AWS_CONFIG_FILE="$T/config" "$@"
}
run profile AWS_PROFILE=ci "$ST" "$B/many" list obj/0000; expect 0
[ "$(lines "$T/out")" -eq 10 ] || fail "the profile's store listed $(cat "$T/out")"
# The keys from the credentials file, the region from the config.
cat >>"$T/credentials" <<EOF
[far]
aws_access_key_id = S3RVER
aws_secret_access_key = S3RVER
EOF
run profile AWS_PROFILE=far "$ST" "$B" list ""; expect 1 "expecting 'us-east-1'"
grep -q "ap-south-2" "$T/err" || fail "the config's region was not used: $(cat "$T/err")"
run profile AWS_PROFILE=nosuch "$ST" "$B" list ""; expect 1 "no AWS credentials"
run profile AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PROXY_PORT" "$ST" "$B" list ""
expect 1 "InvalidAccessKeyId" # [default]

note "a session token"
s3_proxy --token "tok/en+=="
run env AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" AWS_SESSION_TOKEN="tok/en+==" "$ST" "$B/many" list obj/0000; expect 0
run env AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" "$ST" "$B/many" list obj/0000; expect 1 "access denied (InvalidToken"
s3_kill "$S3P_PID"

note "503 twice, then the answer"
s3_proxy --fail-first 2
run env AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" "$ST" "$B/big" get blob; expect 0
cmp "$T/out" "$T/big" || fail "the retried get differs"
[ "$(grep -c ' 503$' "$S3P_LOG")" -eq 2 ] || fail "not two 503s: $(cat "$S3P_LOG")"
[ "$(grep -c ' 200$' "$S3P_LOG")" -eq 2 ] || fail "not two answers (list, get): $(cat "$S3P_LOG")"
s3_kill "$S3P_PID"
s3_proxy --fail-first 1000000
run env AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" BDFILTER_S3_TRIES=3 "$ST" "$B" list ""
expect 1 "HTTP 503 (SlowDown: Please reduce your request rate.) after 3 tries"
[ "$(lines "$S3P_LOG")" -eq 3 ] || fail "not 3 tries: $(cat "$S3P_LOG")"
s3_kill "$S3P_PID"

note "answers that are not HTTP, nor S3"
s3_proxy --garbage
run env AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" "$ST" "$B" get x; expect 1 "the server's answer is not HTTP"
[ "$(lines "$T/err")" -eq 1 ] || fail "more than one line: $(cat "$T/err")"
[ "$(lines "$S3P_LOG")" -eq 1 ] || fail "garbage was retried: $(cat "$S3P_LOG")"
s3_kill "$S3P_PID"
s3_proxy --not-s3
run env AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" "$ST" "$B" list ""; expect 1 "not an S3 listing"
s3_kill "$S3P_PID"

note "a server that stalls: the stall timeout, each try"
s3_proxy --stall
start=$SECONDS
run env AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" BDFILTER_S3_TIMEOUT=1 BDFILTER_S3_TRIES=2 "$ST" "$B" list ""
expect 1 "Operation too slow.*(2 tries)"
[ $((SECONDS - start)) -lt 15 ] || fail "a stalled server took $((SECONDS - start)) s"
s3_kill "$S3P_PID"

note "the server killed in the middle of a 20 MiB put"
s3_proxy --stall-put "$T/putting"
AWS_ENDPOINT_URL="http://127.0.0.1:$S3P_PORT" "$ST" "$B/killed" put blob "$T/big" >"$T/put.out" 2>"$T/put.err" &
putter=$!
n=0
while [ ! -e "$T/putting" ]; do
	kill -0 $putter 2>/dev/null || fail "the put ended before the server had its body: $(cat "$T/put.err")"
	n=$((n + 1)); [ $n -lt 600 ] || fail "the PUT never reached the server"
	sleep 0.05
done
s3_kill "$S3P_PID"
start=$SECONDS
rc=0; wait $putter || rc=$?
[ $rc -eq 1 ] || fail "the put exited $rc after its server died: $(cat "$T/put.err")"
grep -q "PUT blob: .*(5 tries)" "$T/put.err" || fail "no retries said: $(cat "$T/put.err")"
[ "$(lines "$T/put.err")" -eq 1 ] || fail "more than one line: $(cat "$T/put.err")"
[ $((SECONDS - start)) -lt 20 ] || fail "the failed put took $((SECONDS - start)) s"
run "$ST" "$B/killed" get blob; expect 2 # all or nothing

note "locks: each pair of modes"
L="$B/lk"
conflicts() { [ "$1" = prune ] || [ "$2" = prune ] || { [ "$1" = append ] && [ "$2" = append ]; }; }
# hold MODE [ENV...]: a holder whose stdin is the fifo on fd 8; sets $holder.
hold() {
	_m=$1; shift
	rm -f "$T/hold"; mkfifo "$T/hold"
	env "$@" "$ST" "$L" lock "$_m" <"$T/hold" >"$T/holder.out" 2>"$T/holder.err" &
	holder=$!
	exec 8>"$T/hold"
	_n=0
	until grep -q '^locked$' "$T/holder.out"; do
		kill -0 $holder 2>/dev/null || fail "the $_m holder failed: $(cat "$T/holder.err")"
		_n=$((_n + 1)); [ $_n -lt 600 ] || fail "the $_m holder never took the lock"
		sleep 0.05
	done
}
release() {
	exec 8>&-
	_rc=0; wait $holder || _rc=$?
	[ $_rc -eq 0 ] || fail "the holder exited $_rc: $(cat "$T/holder.err")"
	run "$ST" "$L" list locks/; expect 0
	[ ! -s "$T/out" ] || fail "a lock is left after unlock: $(cat "$T/out")"
}
for held in read append prune; do
	for want in read append prune; do
		hold $held
		run "$ST" "$L" lock $want </dev/null
		if conflicts $held $want; then
			expect 1 "s3://bkt/lk: locked for $held by pid $holder on $HOST$"
			[ "$(lines "$T/err")" -eq 1 ] || fail "more than one line: $(cat "$T/err")"
		else
			expect 0; grep -qx locked "$T/out" || fail "$want beside $held: not locked"
		fi
		release
	done
done

note "locks: stale, junk, a holder killed, the renewal"
printf '{"mode":"prune","host":"elsewhere","pid":4242,"time":%d}\n' $(($(date +%s) - 3600)) >"$T/stale.json"
run "$ST" "$L" put locks/00stale "$T/stale.json"; expect 0
run "$ST" "$L" lock prune </dev/null; expect 0 "ignoring a stale lock: prune by pid 4242 on elsewhere, last renewed 60 min ago"
[ "$(grep -c stale "$T/err")" -eq 1 ] || fail "the stale lock was reported more than once"
# Stale for others (it removed it), live for one told that locks go stale
# after 2 hours.
run "$ST" "$L" get locks/00stale; expect 2
run "$ST" "$L" put locks/00stale "$T/stale.json"; expect 0
run env BDFILTER_S3_LOCK_STALE=7200 "$ST" "$L" lock read </dev/null; expect 1 "locked for prune by pid 4242 on elsewhere"
run "$ST" "$L" del locks/00stale; expect 0
printf 'not json' >"$T/junk"
run "$ST" "$L" put locks/junk "$T/junk"; expect 0
run "$ST" "$L" lock read </dev/null; expect 1 "locks/junk is not a lock"
run "$ST" "$L" del locks/junk; expect 0
# kill -9: on this host the holder's pid is gone, so its lock is ignored at
# once; a lock of another host's (a fresh one) holds until it goes stale.
hold append
run "$ST" "$L" lock append </dev/null; expect 1 "locked for append by pid $holder on $HOST"
kill -KILL $holder; wait $holder 2>/dev/null || true; exec 8>&-
run "$ST" "$L" lock append </dev/null; expect 0 "ignoring the lock of pid $holder, which is gone from this host (locks/.*, removed)"
run "$ST" "$L" list locks/; expect 0
[ ! -s "$T/out" ] || fail "the dead holder's lock is still there: $(cat "$T/out")"
printf '{"mode":"append","host":"elsewhere","pid":%d,"time":%d}\n' $$ "$(date +%s)" >"$T/other.json"
run "$ST" "$L" put locks/00other "$T/other.json"; expect 0
run "$ST" "$L" lock append </dev/null; expect 1 "locked for append by pid $$ on elsewhere"
run env BDFILTER_S3_LOCK_STALE=0.001 "$ST" "$L" lock append </dev/null; expect 0 "ignoring a stale lock: append by pid $$ on elsewhere.*removed"
run "$ST" "$L" list locks/; expect 0
[ ! -s "$T/out" ] || fail "the stale lock is still there: $(cat "$T/out")"
# A holder renewing each second: its lock's time moves on.
hold read BDFILTER_S3_LOCK_REFRESH=1
run "$ST" "$L" list locks/; expect 0
key=$(cut -d' ' -f1 "$T/out")
run "$ST" "$L" get "$key"; expect 0
first=$(sed 's/.*"time":\([0-9]*\).*/\1/' "$T/out")
n=0
while :; do
	run "$ST" "$L" get "$key"; expect 0
	[ "$(sed 's/.*"time":\([0-9]*\).*/\1/' "$T/out")" -gt "$first" ] && break
	n=$((n + 1)); [ $n -lt 100 ] || fail "the lock was not renewed: $(cat "$T/out")"
	sleep 0.1
done
release

note "locks: two appenders at once, never both"
for round in 1 2 3 4 5; do
	rm -f "$T/h1" "$T/h2"; mkfifo "$T/h1" "$T/h2"
	"$ST" "$L" lock append <"$T/h1" >"$T/r1.out" 2>"$T/r1.err" &
	p1=$!
	"$ST" "$L" lock append <"$T/h2" >"$T/r2.out" 2>"$T/r2.err" &
	p2=$!
	exec 5>"$T/h1" 6>"$T/h2"
	# Each either holds (says "locked") or has exited.
	n=0
	for p in 1 2; do
		pid=$p1; [ $p = 2 ] && pid=$p2
		until grep -q '^locked$' "$T/r$p.out" || ! kill -0 $pid 2>/dev/null; do
			n=$((n + 1)); [ $n -lt 600 ] || fail "round $round: locker $p hangs"
			sleep 0.05
		done
	done
	held=0
	grep -q '^locked$' "$T/r1.out" && held=$((held + 1))
	grep -q '^locked$' "$T/r2.out" && held=$((held + 1))
	[ $held -le 1 ] || fail "round $round: both appenders hold the lock"
	exec 5>&- 6>&-
	wait $p1 || true; wait $p2 || true
	note "round $round: $held held, $(cat "$T/r1.err" "$T/r2.err" | grep -c withdrawn || true) withdrew after the race"
	run "$ST" "$L" list locks/; expect 0
	[ ! -s "$T/out" ] || fail "round $round: a lock is left: $(cat "$T/out")"
done

s3_stop
note "all S3 store cases passed"
