#!/bin/bash
# bdfilter-backup serve: a restore point as a read-only NBD export. A chain
# (a full backup and two incrementals of a tracked bdfilterd device) is
# served at backup 0 and at the last incremental, and read by real clients:
# nbdinfo (size, read-only, the allocation map: zero blocks as holes),
# nbdcopy and qemu-img convert (byte for byte what `restore --at N` writes),
# qemu-io -r, two clients at once, a client over TLS (PSK). Writes are
# refused. A damaged data block reads as EIO, said once on stderr, and the
# rest is still served. Mistakes: --at a missing backup (exit 1, one line), a
# bad --listen (exit 2), TCP reachable from elsewhere without TLS (exit 1).
# The repository is version 2, or version 1 with BDF_REPO_VERSION=1 (meson
# runs both); for version 2 also an encrypted one, served with its key and
# refused without it.
# SIGTERM and SIGINT end it with 0 and remove the socket; the repository's
# read lock is held meanwhile. No fixed sleeps: each server is waited for by
# its ready line.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/tls-lib.sh"
need nbdinfo nbdcopy nbdsh qemu-img qemu-io flock psktool
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

MIB=$((1 << 20))
BLK=65536
R="$T/repo"
V=${BDF_REPO_VERSION:-2}

# ---- the chain: data in [0, 24M) and [40M, 44M) of 64M, then changes ----
truncate -s 64M "$T/d.img"
head -c 24M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
head -c 4M /dev/urandom | dd of="$T/d.img" bs=1M seek=40 conv=notrunc status=none
truncate -s 256M "$T/diff.img"
bdf_start --device "d=$T/d.img,filter=tracker"
IMG=$(uri d-image)
backup() {
	id=$(snap d "$T/diff.img")
	"$BACKUP" "$@" --from "$IMG" --repo "$R" --quiet >/dev/null 2>"$T/err" || fail "$1 backup: $(cat "$T/err")"
	B snapshot_destroy -i "$id"
}
backup full --repo-version "$V"
if [ "$V" = 2 ]; then
	printf 'a key for serving\n' >"$T/key"
	id=$(snap d "$T/diff.img")
	"$BACKUP" full --from "$IMG" --repo "$T/enc" --key-file "$T/key" --quiet >/dev/null 2>"$T/err" ||
		fail "full backup into an encrypted repository: $(cat "$T/err")"
	nbdcopy "$IMG" "$T/enc0.img"
	B snapshot_destroy -i "$id"
fi
# 1: an unaligned write across blocks 2/3, zeros over data (blocks 16-17), a
# discard of data (block 40), a write into a hole (block 800)
io d "write -P 0x11 $((3 * BLK - 1000)) 3000"
io d "write -z $((16 * BLK)) $((2 * BLK))"
qemu-io -f raw "$(uri d)" -c "discard $((40 * BLK)) $BLK" >/dev/null || fail "discard"
io d "write -P 0x22 $((800 * BLK + 4096)) 512"
backup incremental
# 2: one more block
io d "write -P 0x33 $((1000 * BLK)) 4096"
backup incremental
bdf_stop
for n in 0 2; do
	"$BACKUP" restore --repo "$R" --at $n --to "$T/r$n.img" --quiet >/dev/null || fail "restore --at $n"
done

# ---- the server ----
SPID=
# serve ARGS...: start `serve --repo $R ARGS...`, wait for its ready line
# (through a FIFO: a blocking read, no polling) into $READY, the URI in $URL.
serve() {
	mkfifo "$T/ready"
	"$BACKUP" serve --repo "$R" "$@" >"$T/ready" 2>"$T/serve.err" &
	SPID=$!
	exec 3<"$T/ready"
	rm -f "$T/ready"
	READY=
	if ! read -r -t 30 READY <&3; then
		_rc=0; wait "$SPID" || _rc=$?
		SPID=
		fail "serve $* did not become ready (exit $_rc): $(cat "$T/serve.err")"
	fi
	URL=${READY##* on }
}
# unserve [SIGNAL]: stop it; it must exit 0.
unserve() {
	kill -"${1:-TERM}" "$SPID"
	_rc=0; wait "$SPID" || _rc=$?
	SPID=
	exec 3<&-
	[ $_rc = 0 ] || fail "serve exited $_rc after SIG${1:-TERM}: $(cat "$T/serve.err")"
}
trap '_rc=$?; [ -n "$SPID" ] && kill -KILL "$SPID" 2>/dev/null; (exit $_rc); _bdf_cleanup' EXIT

# check_map N: the allocation map is data exactly where restore wrote a block
# that is not all zeros, and every extent is whole blocks (the last one cut at
# the end).
check_map() {
	nbdinfo --map --json "$URL" >"$T/map.json" || fail "nbdinfo --map of backup $1"
	$PY - "$T/map.json" "$T/r$1.img" $BLK <<'PYEOF' || fail "the map of backup $1 is not its zero blocks: $(cat "$T/map.json")"
import json, sys
m = json.load(open(sys.argv[1]))
img = open(sys.argv[2], "rb").read()
bs = int(sys.argv[3])
pos = 0
for e in m:
    assert e["offset"] == pos, e
    zero = e["type"] & 2 != 0
    assert (e["type"] & 1 != 0) == zero, e  # a zero block is a hole too
    for b in range(e["offset"] // bs, (e["offset"] + e["length"] + bs - 1) // bs):
        blk = img[b * bs:(b + 1) * bs]
        assert (blk.count(0) == len(blk)) == zero, (b, e)
    pos += e["length"]
assert pos == len(img), pos
PYEOF
}

# check N: what every client reads of the export is backup N's image
check() {
	[ "$(nbdinfo --size "$URL")" = $((64 * MIB)) ] || fail "backup $1: size $(nbdinfo --size "$URL")"
	nbdinfo --is read-only "$URL" || fail "backup $1: not read-only"
	check_map "$1"
	rm -f "$T/copy.img" "$T/conv.img"
	nbdcopy "$URL" "$T/copy.img" || fail "nbdcopy of backup $1"
	cmp "$T/copy.img" "$T/r$1.img" || fail "nbdcopy of backup $1 differs from its restore"
	qemu-img convert -f raw -O raw "$URL" "$T/conv.img" || fail "qemu-img convert of backup $1"
	cmp "$T/conv.img" "$T/r$1.img" || fail "qemu-img convert of backup $1 differs from its restore"
	qemu-img info -f raw "$URL" >"$T/info" || fail "qemu-img info of backup $1"
	grep -q "^virtual size: 64 MiB" "$T/info" || fail "qemu-img info: $(cat "$T/info")"
	# a write is refused: the export is read-only
	qemu-io -f raw "$URL" -c "write 0 512" >"$T/out" 2>&1 && fail "qemu-io wrote to backup $1"
	# (past libnbd's own check: the server refuses it)
	nbdsh -u "$URL" -c 'h.set_strict_mode(0); h.pwrite(b"x" * 512, 0)' >"$T/out" 2>&1 &&
		fail "nbdsh wrote to backup $1"
	grep -q "command failed: Operation not permitted" "$T/out" || fail "write to backup $1: $(cat "$T/out")"
	cmp "$T/copy.img" "$T/r$1.img" || fail "backup $1 changed"
}

# backup 0, named explicitly; the ready line says what is served where
serve --at 0 --listen "unix:$T/s.sock"
[ "$READY" = "serving backup 0 of $R on nbd+unix:///backup-0?socket=$T/s.sock" ] || fail "ready line: $READY"
check 0
qemu-io -r -f raw "$URL" -c "read -P 0 $((800 * BLK)) $BLK" -c "read -P 0 $((30 * MIB + 512)) 4096" >"$T/out" ||
	fail "qemu-io -r of backup 0: $(cat "$T/out")"
! grep -q "fail\|error" "$T/out" || fail "qemu-io -r of backup 0: $(cat "$T/out")"
# the read lock is held: shared, not exclusive
flock -n -s "$R/lock" true || fail "serve holds the repository's lock exclusively"
flock -n -x "$R/lock" true && fail "serve does not hold the repository's read lock"
unserve TERM
[ ! -e "$T/s.sock" ] || fail "the socket is left after SIGTERM"
flock -n -x "$R/lock" true || fail "the lock is held after serve ended"

# the last backup by default, under its own name and as the default export
serve --listen "unix:$T/s.sock"
[ "$READY" = "serving backup 2 of $R on nbd+unix:///backup-2?socket=$T/s.sock" ] || fail "ready line: $READY"
check 2
URL="nbd+unix:///?socket=$T/s.sock"
nbdcopy "$URL" "$T/dflt.img" && cmp "$T/dflt.img" "$T/r2.img" || fail "the default export is not backup 2"
qemu-io -r -f raw "$URL" -c "read -P 0x22 $((800 * BLK + 4096)) 512" -c "read -P 0x33 $((1000 * BLK)) 4096" \
	-c "read -P 0x11 $((3 * BLK - 1000)) 3000" -c "read -P 0 $((16 * BLK)) $((2 * BLK))" >"$T/out" ||
	fail "qemu-io -r of backup 2: $(cat "$T/out")"
! grep -q "fail\|error" "$T/out" || fail "qemu-io -r of backup 2: $(cat "$T/out")"
# two clients at once, each its whole copy
nbdcopy "$URL" "$T/c1.img" & c1=$!
nbdcopy --connections=2 "$URL" "$T/c2.img" & c2=$!
wait $c1 || fail "first of two clients"
wait $c2 || fail "second of two clients"
cmp "$T/c1.img" "$T/r2.img" && cmp "$T/c2.img" "$T/r2.img" || fail "two clients at once read different data"
kill -0 "$SPID" || fail "serve died"
unserve INT
[ ! -e "$T/s.sock" ] || fail "the socket is left after SIGINT"

# a damaged block: flip a byte of block 5's copy in backup 0's data (no
# incremental holds block 5)
# (version 2: the pack that holds block 5's bytes, which random data leaves
# uncompressed)
if [ "$V" = 1 ]; then
	$PY - "$R/000000/index" 5 >"$T/off" <<'PYEOF'
import struct, sys
buf = open(sys.argv[1], "rb").read()
want = int(sys.argv[2])
for i in range(struct.unpack_from("<Q", buf, 16)[0]):
    blk, off = struct.unpack_from("<QQ", buf, 24 + 32 * i)
    if blk == want:
        print(off)
PYEOF
	dfile="$R/000000/data"
else
	$PY - "$R" "$T/r0.img" 5 >"$T/off" <<'PYEOF'
import os, sys
block = open(sys.argv[2], "rb").read()[int(sys.argv[3]) * 65536:(int(sys.argv[3]) + 1) * 65536]
for d, _, files in os.walk(os.path.join(sys.argv[1], "packs")):
    for f in files:
        at = open(os.path.join(d, f), "rb").read().find(block)
        if at >= 0:
            print(at, os.path.join(d, f))
PYEOF
	dfile=$(cut -d' ' -f2 "$T/off")
fi
off=$(cut -d' ' -f1 "$T/off")
[ -n "$off" ] || fail "block 5 is not in backup 0"
flip() {
	$PY -c 'import sys
f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); b = f.read(1)
f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xff]))' "$dfile" $((off + 100))
}
serve --listen "unix:$T/s.sock" --export damaged
flip
for _ in 1 2; do
	qemu-io -r -f raw "$URL" -c "read $((5 * BLK + 4096)) 4096" >"$T/out" 2>&1 || true
	grep -q "Input/output error" "$T/out" || fail "a damaged block read: $(cat "$T/out")"
done
nbdcopy "$URL" "$T/bad.img" 2>"$T/out" && fail "nbdcopy read through a damaged block"
# the rest is served, on the same connection and on new ones
qemu-io -r -f raw "$URL" -c "read $((5 * BLK + 4096)) 4096" -c "read -P 0x33 $((1000 * BLK)) 4096" \
	-c "read -P 0x22 $((800 * BLK + 4096)) 512" >"$T/out" 2>&1 || true
[ "$(grep -c "^read [0-9]" "$T/out")" = 2 ] && grep -q "Input/output error" "$T/out" || fail "reads after a damaged one: $(cat "$T/out")"
nbdinfo --size "$URL" >/dev/null || fail "no new connection after a damaged block"
nbdsh -u "$URL" -c "assert h.pread($BLK, $((4 * BLK))) == open('$T/r2.img', 'rb').read()[$((4 * BLK)):$((5 * BLK))]" ||
	fail "the block before the damaged one"
grep -c "backup [02]: block 5.*does not match its \(checksum\|id\)" "$T/serve.err" >"$T/n" || true
[ "$(cat "$T/n")" = 1 ] || fail "the damage was said $(cat "$T/n") times: $(cat "$T/serve.err")"
unserve TERM
flip # repaired

# mistakes: exit 1 with one line, exit 2 for usage, and no socket left
rc=0; "$BACKUP" serve --repo "$R" --at 7 --listen "unix:$T/x.sock" >"$T/out" 2>"$T/err" || rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "no backup 7" "$T/err" ||
	fail "--at a missing backup: exit $rc: $(cat "$T/err")"
[ ! -s "$T/out" ] && [ ! -e "$T/x.sock" ] || fail "--at a missing backup said it was ready or left a socket"
for bad in "foo:bar" "unix:" "tcp:" "tcp:127.0.0.1:0" "tcp:host:port" "$T/x.sock"; do
	rc=0; "$BACKUP" serve --repo "$R" --listen "$bad" >/dev/null 2>"$T/err" || rc=$?
	[ $rc = 2 ] && [ "$(wc -l <"$T/err")" = 1 ] || fail "--listen '$bad': exit $rc: $(cat "$T/err")"
done
rc=0; "$BACKUP" serve --repo "$R" >/dev/null 2>"$T/err" || rc=$?
[ $rc = 2 ] || fail "serve without --listen: exit $rc"
rc=0; "$BACKUP" serve --repo "$T/nothing" --listen "unix:$T/x.sock" >/dev/null 2>"$T/err" || rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] || fail "serve of no repository: exit $rc: $(cat "$T/err")"
if [ "$V" = 2 ]; then
	rc=0; "$BACKUP" serve --repo "$T/enc" --listen "unix:$T/x.sock" >/dev/null 2>"$T/err" || rc=$?
	[ $rc = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "encrypted: give its key" "$T/err" ||
		fail "serve of an encrypted repository without its key: exit $rc: $(cat "$T/err")"
	R="$T/enc" serve --listen "unix:$T/e.sock" --key-file "$T/key"
	nbdcopy "$URL" "$T/e.img" && cmp "$T/e.img" "$T/enc0.img" || fail "the encrypted backup served differs"
	unserve
fi
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rc=0; "$BACKUP" serve --repo "$R" --listen "tcp:0.0.0.0:$port" >"$T/out" 2>"$T/err" || rc=$?
[ $rc = 1 ] && grep -q "needs TLS" "$T/err" && [ ! -s "$T/out" ] ||
	fail "TCP for every machine without TLS: exit $rc: $(cat "$T/err")"

# TCP on loopback needs no TLS; with a PSK, TLS is required of every client
serve --at 0 --listen "tcp:127.0.0.1:$port"
[ "$URL" = "nbd://127.0.0.1:$port/backup-0" ] || fail "ready line: $READY"
nbdcopy "$URL" "$T/tcp.img" && cmp "$T/tcp.img" "$T/r0.img" || fail "backup 0 over TCP"
unserve
make_psk "$T/keys.psk" alice
serve --at 0 --listen "unix:$T/s.sock" --tls-psk "$T/keys.psk"
[ "$URL" = "nbds+unix:///backup-0?socket=$T/s.sock" ] || fail "ready line with TLS: $READY"
nbdcopy "nbds+unix://alice@/backup-0?socket=$T/s.sock&tls-psk-file=$T/keys.psk" "$T/tls.img" ||
	fail "nbdcopy over TLS"
cmp "$T/tls.img" "$T/r0.img" || fail "backup 0 over TLS differs"
nbdinfo --size "nbd+unix:///backup-0?socket=$T/s.sock" >/dev/null 2>&1 && fail "a client without TLS was served"
unserve
exit 0
