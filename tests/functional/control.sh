#!/bin/bash
# The control socket and the bdfilter CLI: devices added and removed live (and
# their NBD exports with them), filters attached and detached, the tracker's
# geometry and maps, parameters, key=value and JSON output, errors as errno names.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need nbdinfo qemu-io

mkimage "$T/a.img" 64
truncate -s 200G "$T/big.img"
bdf_start --device "a=$T/a.img"

[ "$(stat -c %a "$CTL")" = 600 ] || fail "control socket mode $(stat -c %a "$CTL")"
B version | grep -q '^version=2\.0\.0\.0$' || fail "version"
B --json version | $PY -c 'import json,sys; assert json.load(sys.stdin)["bdfilter"]' || fail "version --json"
[ "$(B params | kv diff_storage_minimum)" = 2097152 ] || fail "params"
[ "$(B params | wc -l)" = 9 ] || fail "nine parameters"

# devices come and go, and so do their exports
B device_add -d big -f "$T/big.img" >/dev/null
[ "$(nbdinfo --size "$(uri big)")" = $((200 << 30)) ] || fail "export of an added device"
expect EEXIST device_add -d big -f "$T/big.img"
expect ENOENT device_add -d other -f "$T/missing.img"
expect EINVAL device_add -d "bad/name" -f "$T/a.img"
B device_list | grep -q '^name=big$' || fail "device_list"
[ "$(B --json device_list | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["devices"]))')" = 2 ] ||
	fail "device_list --json"
B device_remove -d big
nbdinfo --size "$(uri big)" 2>/dev/null && fail "export of a removed device is still there"
expect ENODEV device_remove -d big
expect ENODEV attach -d nope

# filters, live, with blksnap's errors
expect ENOENT cbtinfo -d a
B attach -d a
expect EALREADY attach -d a
expect EINVAL attach -d a -n nosuchfilter
B attach -d a -n passthrough
[ "$(B device_list | kv filters | tr '\n' ' ')" = "passthrough tracker " ] || fail "filter stack order"
qemu-io -f raw "$(uri a)" -c 'write -P 7 1M 64k' >/dev/null || fail "write through two filters"
B detach -d a -n passthrough
expect ENOENT detach -d a -n passthrough

# blksnap's CBT geometry: 64 KiB blocks up to 2097152 of them, then doubling
info=$(B cbtinfo -d a)
[ "$(kv block_size <<<"$info")" = 65536 ] || fail "block_size: $info"
[ "$(kv block_count <<<"$info")" = 1024 ] || fail "block_count: $info"
[ "$(kv device_capacity <<<"$info")" = $((64 << 20)) ] || fail "device_capacity: $info"
[ "$(kv changes_number <<<"$info")" = 0 ] || fail "changes_number: $info"
kv generation_id <<<"$info" | grep -Eq '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$' || fail "generation_id: $info"
B device_add -d big -f "$T/big.img" >/dev/null
B attach -d big
info=$(B cbtinfo -d big)
# 200 GiB / 64 KiB = 3276800 > 2097152: 128 KiB blocks, 1638400 of them
[ "$(kv block_size <<<"$info")" = 131072 ] || fail "big block_size: $info"
[ "$(kv block_count <<<"$info")" = 1638400 ] || fail "big block_count: $info"

# the map: one byte per block (the read map: all zero before the first take)
B readcbtmap -d big -f "$T/big.map" >/dev/null
[ "$(stat -c %s "$T/big.map")" = 1638400 ] || fail "readcbtmap size $(stat -c %s "$T/big.map")"
cmp -s "$T/big.map" <(head -c 1638400 /dev/zero) || fail "read map before any take"
B readcbtmap -d a -f "$T/part.map" -o 1000 -l 100 | grep -q '^bytes=24$' || fail "readcbtmap -o -l"
expect EINVAL readcbtmap -d a -f "$T/x.map" -o 5000
B markdirtyblock -d a -r 0:8 -r 2048:1 4096:128
expect EINVAL markdirtyblock -d a -r $(( (64 << 20) / 512 )):1
expect EINVAL markdirtyblock -d a -r 18446744073709551615:2

# detach with a client connected and writing: the client goes on
qemu-io -f raw "$(uri a)" -c 'write -P 9 0 4M' >/dev/null &
B detach -d a
wait $! || fail "writer failed while the tracker was detached"
expect ENOENT cbtinfo -d a

# CLI mistakes: clear message, exit 2, nothing sent
rc=0; B cbtinfo 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -q "missing -d" "$T/err" || fail "missing -d: rc=$rc $(cat "$T/err")"
rc=0; B nosuchcommand 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -q "unknown command" "$T/err" || fail "unknown command"
rc=0; B markdirtyblock -d a -r 12 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -q "OFFSET:COUNT" "$T/err" || fail "bad range"
rc=0; BDFILTER_CONTROL="$T/none.sock" B version 2>"$T/err" || rc=$?
[ $rc -eq 1 ] && grep -q "is bdfilterd running" "$T/err" || fail "no daemon"
B cbtinfo --help | grep -q -- "--device" || fail "command --help"

# paths are the CLI's: relative to where it runs, not to the daemon's cwd
mkdir "$T/here"
mkimage "$T/here/rel.img" 1
(cd "$T/here" && B device_add -d rel -f rel.img) >"$T/out" || fail "device_add with a relative path"
[ "$(B device_list --json | $PY -c 'import json,sys; print([d["path"] for d in json.load(sys.stdin)["devices"] if d["name"] == "rel"][0])')" = "$T/here/rel.img" ] ||
	fail "a relative path was not made absolute: $(B device_list)"
B device_remove -d rel
bdf_alive
bdf_stop
