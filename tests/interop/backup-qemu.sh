#!/bin/bash
# bdfilter-backup against QEMU's dirty bitmaps: qemu-nbd -B and
# qemu-storage-daemon's NBD export of a persistent bitmap of a qcow2 image. A
# full backup, writes that the bitmap records, an incremental that reads the
# bitmap named with --bitmap (by name, and as a full context name), restores
# compared with the qcow2 image at each point by qemu-img compare. Without
# --bitmap the client refuses, since QEMU's export says nothing of its changes.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need qemu-img qemu-io qemu-nbd
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

Q="$T/img.qcow2"
S="$T/q.sock"
R="$T/repo"
qemu-img create -q -f qcow2 "$Q" 64M
qemu-io -f qcow2 "$Q" -c "write -P 0x11 0 8M" -c "write -P 0x12 40M 1M" >/dev/null
qemu-img bitmap --add "$Q" b0

QPID=
stop_server() {
	[ -n "$QPID" ] || return 0
	kill -TERM "$QPID" 2>/dev/null || true
	wait "$QPID" 2>/dev/null || true
	QPID=
	rm -f "$S"
}
trap '_rc=$?; stop_server; (exit $_rc); _bdf_cleanup' EXIT
serve_qemu_nbd() {
	qemu-nbd -r -f qcow2 -B b0 --socket "$S" "$Q" 2>"$T/qemu-nbd.log" &
	QPID=$!
	wait_for_socket "$S"
}
# restored N: restore backup N and compare it with the qcow2 image now
restored() {
	"$BACKUP" restore --repo "$R" --at "$1" --to "$T/r$1.img" --quiet >/dev/null 2>"$T/err" ||
		fail "restore --at $1: $(cat "$T/err")"
	qemu-img compare -q -f raw -F qcow2 "$T/r$1.img" "$Q" || fail "backup $1 differs from the image"
}

# qemu-nbd: full, then an incremental from b0
serve_qemu_nbd
"$BACKUP" full --from "nbd+unix:///?socket=$S" --repo "$R" --device disk --json >"$T/b0.json" 2>"$T/err" || fail "full from qemu-nbd: $(cat "$T/err")"
[ "$(jfield "$T/b0.json" generation)" = None ] || fail "qemu-nbd has no generation, got $(jfield "$T/b0.json" generation)"
[ "$(jfield "$T/b0.json" bytes_read)" -le $((10 << 20)) ] || fail "full read $(jfield "$T/b0.json" bytes_read) bytes of a 9 MiB image"
stop_server
restored 0

qemu-io -f qcow2 "$Q" -c "write -P 0x21 1M 64k" -c "write -P 0x22 30M 100k" -c "write -z 40M 64k" >/dev/null
serve_qemu_nbd
rc=0; "$BACKUP" incremental --from "nbd+unix:///?socket=$S" --repo "$R" --device disk >/dev/null 2>"$T/err" || rc=$?
[ $rc = 1 ] && grep -q -- "--bitmap" "$T/err" || fail "incremental from qemu-nbd without --bitmap: $rc $(cat "$T/err")"
"$BACKUP" incremental --from "nbd+unix:///?socket=$S" --repo "$R" --device disk --bitmap b0 --json >"$T/b1.json" 2>"$T/err" ||
	fail "incremental from qemu-nbd: $(cat "$T/err")"
[ "$(jfield "$T/b1.json" bitmap)" = "qemu:dirty-bitmap:b0" ] || fail "incremental read $(jfield "$T/b1.json" bitmap)"
# 64k + 100k (two or three 64 KiB blocks) + 64k: at most 5 blocks, 1 of them zero
[ "$(jfield "$T/b1.json" blocks)" -ge 4 ] && [ "$(jfield "$T/b1.json" blocks)" -le 5 ] ||
	fail "incremental from qemu-nbd holds $(jfield "$T/b1.json" blocks) blocks"
stop_server
restored 1

# qemu-storage-daemon exporting the same bitmap (it refuses an enabled bitmap
# on a read-only export, so the export is writable; nothing writes to it)
if command -v qemu-storage-daemon >/dev/null; then
	qemu-io -f qcow2 "$Q" -c "write -P 0x31 50M 2M" >/dev/null
	qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$Q" \
		--blockdev driver=qcow2,node-name=fmt,file=f \
		--nbd-server "addr.type=unix,addr.path=$S" \
		--export type=nbd,id=e,node-name=fmt,name=disk,writable=on,bitmaps.0=b0 2>"$T/qsd.log" &
	QPID=$!
	wait_for_socket "$S"
	"$BACKUP" incremental --from "nbd+unix:///disk?socket=$S" --repo "$R" --device disk --bitmap qemu:dirty-bitmap:b0 \
		--json >"$T/b2.json" 2>"$T/err" || fail "incremental from qemu-storage-daemon: $(cat "$T/err")"
	# b0 still holds the first writes too: 2 MiB more is 32 blocks more
	[ "$(jfield "$T/b2.json" blocks)" -ge 36 ] || fail "incremental from qemu-storage-daemon holds $(jfield "$T/b2.json" blocks) blocks"
	rc=0; "$BACKUP" incremental --from "nbd+unix:///disk?socket=$S" --repo "$R" --device disk --bitmap nope >/dev/null 2>"$T/err" || rc=$?
	[ $rc = 1 ] && grep -q "does not offer qemu:dirty-bitmap:nope" "$T/err" || fail "a missing bitmap: $rc $(cat "$T/err")"
	stop_server
	restored 2
	qemu-img compare -q -f raw -F qcow2 "$T/r1.img" "$Q" && fail "backup 1 compares equal to the image after more writes"
else
	note "qemu-storage-daemon not installed: its part is skipped"
fi
"$BACKUP" verify --repo "$R" >/dev/null || fail "verify"
exit 0
