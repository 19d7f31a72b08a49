#!/bin/bash
# bdfilter-backup over TLS: a full and an incremental backup of a snapshot
# image through nbds+unix:// with --tls-creds, one through a URI that names
# its tls-certificates= itself, one with --tls-psk, a restore to an nbds://
# export, each byte for byte against nbdcopy's copy of the image; and the
# mistakes refused with one line: TLS options with a plaintext URI, both kinds
# of credentials at once, a client the server does not let in.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/tls-lib.sh"
need certtool psktool nbdcopy
[ -x "$BACKUP" ] || fail "$BACKUP was not built"

PKI=$T/pki
make_x509 "$PKI"
truncate -s 32M "$T/d.img"
head -c 12M /dev/urandom | dd of="$T/d.img" conv=notrunc status=none
truncate -s 32M "$T/target.img"
truncate -s 128M "$T/diff.img"
bdf_start --device "d=$T/d.img,filter=tracker" --device "target=$T/target.img" --tls require --tls-creds "$PKI"
IMG="nbds+unix:///d-image?socket=$SOCK"
R=$T/repo

id=$(snap d "$T/diff.img")
"$BACKUP" full --from "$IMG" --repo "$R" --tls-creds "$PKI" --json >"$T/b0.json" || fail "full backup over TLS"
nbdcopy "$IMG&tls-certificates=$PKI" "$T/ref0.img" || fail "nbdcopy of the image over TLS"
B snapshot_destroy -i "$id"

# io over TLS: qemu-io with the x509 object
qemu-io --object "tls-creds-x509,id=tls0,endpoint=client,dir=$PKI" --image-opts \
	"driver=nbd,server.type=unix,server.path=$SOCK,export=d,tls-creds=tls0,tls-hostname=localhost" \
	-c "write -P 0x5a 1M 256K" -c "write -P 0x6b 20M 64K" >/dev/null || fail "qemu-io over TLS"
id=$(snap d "$T/diff.img")
"$BACKUP" incremental --from "$IMG&tls-certificates=$PKI" --repo "$R" --json >"$T/b1.json" ||
	fail "incremental backup with tls-certificates= in the URI"
[ "$(jfield "$T/b1.json" blocks)" = 5 ] || fail "incremental over TLS holds $(jfield "$T/b1.json" blocks) blocks, 5 were written"
nbdcopy "$IMG&tls-certificates=$PKI" "$T/ref1.img"

"$BACKUP" restore --repo "$R" --at 0 --to "$T/r0.img" >/dev/null || fail "restore 0"
cmp "$T/r0.img" "$T/ref0.img" || fail "restore of the full backup over TLS differs"
"$BACKUP" restore --repo "$R" --to "nbds+unix:///target?socket=$SOCK" --tls-creds "$PKI" >/dev/null ||
	fail "restore to an nbds:// export"
cmp "$T/target.img" "$T/ref1.img" || fail "restore over TLS to the export differs from the image"

# mistakes
if "$BACKUP" full --from "nbd+unix:///d-image?socket=$SOCK" --repo "$T/r2" --tls-creds "$PKI" 2>"$T/err"; then
	fail "--tls-creds with a plaintext URI"
fi
grep -q "need an nbds://" "$T/err" || fail "no reason: $(cat "$T/err")"
if "$BACKUP" full --from "$IMG" --repo "$T/r2" --tls-creds "$PKI" --tls-psk "$T/x" 2>"$T/err"; then
	fail "both kinds of credentials"
fi
grep -q "give one of them" "$T/err" || fail "no reason: $(cat "$T/err")"
if "$BACKUP" full --from "nbd+unix:///d-image?socket=$SOCK" --repo "$T/r2" 2>"$T/err"; then
	fail "a plaintext backup from a --tls require server"
fi
note "plaintext backup against --tls require: $(cat "$T/err")"
B snapshot_destroy -i "$id"
bdf_stop

# PSK
make_psk "$T/keys.psk" backup
bdf_start --device "d=$T/d.img,filter=tracker" --tls require --tls-psk "$T/keys.psk"
id=$(snap d "$T/diff.img")
"$BACKUP" full --from "$IMG" --repo "$T/rpsk" --tls-psk "$T/keys.psk" --json >"$T/p0.json" ||
	fail "full backup with --tls-psk (identity from the file)"
"$BACKUP" restore --repo "$T/rpsk" --to "$T/p0.img" >/dev/null
nbdcopy "nbds+unix://backup@/d-image?socket=$SOCK&tls-psk-file=$T/keys.psk" "$T/pref.img"
cmp "$T/p0.img" "$T/pref.img" || fail "PSK backup differs from the image"
if "$BACKUP" full --from "$IMG" --repo "$T/rpsk2" --tls-psk "$T/keys.psk" --tls-username nobody 2>"$T/err"; then
	fail "an unknown PSK identity got a backup"
fi
note "unknown identity: $(cat "$T/err")"
B snapshot_destroy -i "$id"
bdf_stop
exit 0
