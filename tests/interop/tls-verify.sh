#!/bin/bash
# Who gets in over TLS: --tls-verify-peer lets in the clients with a
# certificate from our CA and refuses the one without a certificate, the one
# from another CA and the expired one; --tls-authz lets in one DN only; with
# --tls-psk, nbdinfo and qemu-img get in with a known identity and key, and an
# unknown identity, a wrong key or an identity --tls-authz does not name stay
# out. Each refusal is logged, and the daemon serves a good client after it.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/tls-lib.sh"
need certtool psktool nbdinfo qemu-img

PKI=$T/pki
make_x509 "$PKI"
DISK=$T/disk.img
mkimage "$DISK" 4
tls_uri() { echo "nbds+unix:///disk?socket=$SOCK&tls-certificates=$1"; }
psk_uri() { echo "nbds+unix://$1@/disk?socket=$SOCK&tls-psk-file=$2"; }
qemu_opts() { echo "driver=nbd,server.type=unix,server.path=$SOCK,export=disk,tls-creds=tls0,tls-hostname=localhost"; }

# refused WHAT URI LOGLINE: the client fails, the log says LOGLINE, a good client still works.
refused() {
	if nbdinfo --size "$2" >"$T/out" 2>&1; then fail "$1: got in"; fi
	grep -q "$3" "$BDF_LOG" || fail "$1: the log does not say '$3'"
	note "$1: client: $(tail -1 "$T/out")"
	bdf_alive
}

# ---- --tls-verify-peer ----
bdf_start --device "disk=$DISK" --tls require --tls-creds "$PKI" --tls-verify-peer
nbdinfo --size "$(tls_uri "$PKI")" >/dev/null || fail "a client with a certificate from our CA"
qemu-img info --object "tls-creds-x509,id=tls0,endpoint=client,dir=$PKI" --image-opts "$(qemu_opts)" >/dev/null ||
	fail "qemu-img with a client certificate"

mkdir "$T/nocert"; cp "$PKI/ca-cert.pem" "$T/nocert/"
refused "no client certificate" "$(tls_uri "$T/nocert")" "TLS handshake failed"

make_ca "$T/other-ca" "another CA"
make_cert "$T/other" "$T/other-ca" client backup
cp "$PKI/ca-cert.pem" "$T/other/ca-cert.pem" # trusts the server, signed by another CA
refused "client certificate from another CA" "$(tls_uri "$T/other")" "TLS handshake failed\|certificate refused"

make_cert "$T/old" "$PKI" client backup expired
refused "expired client certificate" "$(tls_uri "$T/old")" "expired\|TLS handshake failed"
[ "$(grep -c "TLS handshake failed\|certificate refused" "$BDF_LOG")" -ge 3 ] ||
	fail "not every refused client is in the log"
nbdinfo --size "$(tls_uri "$PKI")" >/dev/null || fail "the good client after the refused ones"
bdf_stop

# ---- --tls-authz with X.509 (implies --tls-verify-peer) ----
make_cert "$T/eve" "$PKI" client eve
bdf_start --device "disk=$DISK" --tls require --tls-creds "$PKI" --tls-authz "CN=backup,O=bdfilter test"
nbdinfo --size "$(tls_uri "$PKI")" >/dev/null || fail "--tls-authz: the named client"
refused "--tls-authz: another client of our CA" "$(tls_uri "$T/eve")" "'CN=eve,O=bdfilter test' refused (--tls-authz)"
refused "--tls-authz: no certificate" "$(tls_uri "$T/nocert")" "TLS handshake failed"
bdf_stop

# ---- PSK ----
make_psk "$T/server.psk" alice
make_psk "$T/server.psk" bob
grep "^alice:" "$T/server.psk" >"$T/alice.psk"
grep "^bob:" "$T/server.psk" >"$T/bob.psk"
make_psk "$T/mallory.psk" mallory
sed 's/^alice:.\(.*\)/alice:0\1/' "$T/alice.psk" >"$T/wrong.psk"
cmp -s "$T/alice.psk" "$T/wrong.psk" && sed -i 's/^alice:0/alice:1/' "$T/wrong.psk"
bdf_start --device "disk=$DISK" --tls require --tls-psk "$T/server.psk"
nbdinfo "$(psk_uri alice "$T/alice.psk")" | grep -q "with TLS" || fail "PSK: alice"
nbdinfo --size "$(psk_uri bob "$T/bob.psk")" >/dev/null || fail "PSK: bob"
mkdir "$T/qpsk"; cp "$T/alice.psk" "$T/qpsk/keys.psk"
qemu-img info --object "tls-creds-psk,id=tls0,endpoint=client,dir=$T/qpsk,username=alice" \
	--image-opts "driver=nbd,server.type=unix,server.path=$SOCK,export=disk,tls-creds=tls0" >/dev/null ||
	fail "qemu-img with tls-creds-psk"
refused "PSK: unknown identity" "$(psk_uri mallory "$T/mallory.psk")" "TLS handshake failed"
refused "PSK: wrong key" "$(psk_uri alice "$T/wrong.psk")" "TLS handshake failed"
if nbdinfo --size "$(uri disk)" >/dev/null 2>&1; then fail "PSK: a plaintext client got in"; fi
bdf_stop

bdf_start --device "disk=$DISK" --tls require --tls-psk "$T/server.psk" --tls-authz alice
nbdinfo --size "$(psk_uri alice "$T/alice.psk")" >/dev/null || fail "PSK --tls-authz: alice"
refused "PSK --tls-authz: bob, known but not named" "$(psk_uri bob "$T/bob.psk")" "PSK identity 'bob' refused (--tls-authz)"
bdf_stop
exit 0
