#!/bin/bash
# NBD over TLS with X.509 certificates and real clients: nbdinfo, nbdcopy,
# qemu-img and qemu-io through STARTTLS on a Unix socket and on TCP; a
# plaintext client against --tls require; clients that must not get in (a CA
# they do not trust, the server's certificate expired); --tls on serving both
# kinds; the TCP defaults (TLS required beyond loopback); and every bad TLS
# option refused at start with one clear line.
. "$BDF_SRCDIR/tests/functional/lib.sh"
. "$BDF_SRCDIR/tests/functional/tls-lib.sh"
need certtool nbdinfo nbdcopy qemu-img qemu-io

PKI=$T/pki
make_x509 "$PKI"
DISK=$T/disk.img
mkimage "$DISK" 16
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tls_uri() { echo "nbds+unix:///disk?socket=$SOCK&tls-certificates=$1"; }
qemu_opts() { echo "driver=nbd,server.type=unix,server.path=$SOCK,export=disk,tls-creds=tls0,tls-hostname=localhost"; }
x509_obj() { echo "tls-creds-x509,id=tls0,endpoint=client,dir=$1"; }

# ---- --tls require, X.509 ----
# libnbd checks the server's certificate on TCP only (on a Unix socket it
# takes any), so the clients that must refuse the server go through TCP, or
# are qemu, which checks it on both.
P=$(free_port)
tcp_uri() { echo "nbds://127.0.0.1:$P/disk?tls-certificates=$1"; }
bdf_start --device "disk=$DISK" --tls require --tls-creds "$PKI" --nbd-listen "tcp:127.0.0.1:$P"
grep -q "listening on unix:$SOCK (TLS required)" "$BDF_LOG" || fail "the log does not say TLS is required"

nbdinfo "$(tls_uri "$PKI")" >"$T/info" || fail "nbdinfo over TLS"
grep -q "with TLS" "$T/info" || fail "nbdinfo does not see TLS: $(head -1 "$T/info")"
grep -q "export-size: $((16 << 20))" "$T/info" || fail "nbdinfo: wrong size"

# A plaintext client is refused (NBD_REP_ERR_TLS_REQD), and told why.
if nbdinfo "$(uri disk)" >"$T/out" 2>&1; then fail "a plaintext client read the export of a --tls require server"; fi
nbdinfo --list "$(uri disk)" >"$T/out" 2>&1 || true
grep -q "disk" "$T/out" && fail "a plaintext NBD_OPT_LIST listed the exports"
note "plaintext client refused: $(head -1 "$T/out")"

# nbdcopy both ways over TLS, byte for byte.
mkimage "$T/src.img" 16
nbdcopy "$T/src.img" "$(tls_uri "$PKI")" || fail "nbdcopy to the export over TLS"
nbdcopy "$(tls_uri "$PKI")" "$T/back.img" || fail "nbdcopy from the export over TLS"
cmp "$T/src.img" "$T/back.img" || fail "nbdcopy over TLS: what came back differs"
cmp "$T/src.img" "$DISK" || fail "nbdcopy over TLS: the store differs"

# qemu-img and qemu-io with --object tls-creds-x509.
qemu-img info --object "$(x509_obj "$PKI")" --image-opts "$(qemu_opts)" >"$T/qinfo" ||
	fail "qemu-img info over TLS"
grep -q "virtual size: 16 MiB" "$T/qinfo" || fail "qemu-img info: $(cat "$T/qinfo")"
qemu-io --object "$(x509_obj "$PKI")" --image-opts "$(qemu_opts)" \
	-c 'write -P 0xa5 1M 3M' -c 'write -z 8M 1M' -c flush -c 'read -P 0xa5 1M 3M' -c 'read -P 0 8M 1M' \
	>"$T/qio" 2>&1 || fail "qemu-io over TLS: $(cat "$T/qio")"
grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io over TLS: $(cat "$T/qio")"
qemu-img convert -f raw --object "$(x509_obj "$PKI")" --image-opts "$(qemu_opts)" -O raw "$T/conv.img" 2>/dev/null ||
	qemu-img convert --object "$(x509_obj "$PKI")" --image-opts "$(qemu_opts)" -O raw "$T/conv.img" ||
	fail "qemu-img convert over TLS"
cmp "$T/conv.img" "$DISK" || fail "qemu-img convert over TLS: differs from the store"

# A client that does not trust our CA stops at the handshake; the daemon goes on.
make_ca "$T/other-ca" "another CA"
if nbdinfo "$(tcp_uri "$T/other-ca")" >"$T/out" 2>&1; then fail "libnbd with another CA trusted the server"; fi
note "libnbd with another CA: $(tail -1 "$T/out")"
if qemu-img info --object "$(x509_obj "$T/other-ca")" --image-opts "$(qemu_opts)" >"$T/out" 2>&1; then
	fail "qemu with another CA trusted the server"
fi
note "qemu with another CA: $(tail -1 "$T/out")"
nbdinfo --size "$(tcp_uri "$PKI")" >/dev/null || fail "libnbd over TCP with the right CA"
bdf_alive
nbdinfo --size "$(tls_uri "$PKI")" >/dev/null || fail "a good client after a refused one"
bdf_stop

# ---- the server's certificate expired: clients refuse it ----
make_cert "$T/expired" "$PKI" server localhost expired
bdf_start --device "disk=$DISK" --tls require --tls-creds "$T/expired" --nbd-listen "tcp:127.0.0.1:$P"
if nbdinfo "$(tcp_uri "$PKI")" >"$T/out" 2>&1; then fail "libnbd accepted an expired server certificate"; fi
note "libnbd, expired server certificate: $(tail -1 "$T/out")"
if qemu-img info --object "$(x509_obj "$PKI")" --image-opts "$(qemu_opts)" >"$T/out" 2>&1; then
	fail "qemu accepted an expired server certificate"
fi
note "expired server certificate: $(tail -1 "$T/out")"
bdf_alive
bdf_stop

# ---- --tls on: TLS offered, plaintext still served ----
bdf_start --device "disk=$DISK" --tls on --tls-creds "$PKI"
nbdinfo "$(uri disk)" | grep -q "without TLS" || fail "--tls on: a plaintext client"
nbdinfo "$(tls_uri "$PKI")" | grep -q "with TLS" || fail "--tls on: a TLS client"
bdf_stop

# ---- TCP: TLS required by default beyond loopback ----
p=$(free_port)
if "$BDFILTERD" --foreground --control none --device "disk=$DISK" --nbd-listen "tcp:0.0.0.0:$p" \
	>"$T/out" 2>&1; then fail "a TCP listener beyond loopback started without TLS credentials"; fi
grep -q "needs TLS" "$T/out" || fail "no reason given: $(cat "$T/out")"

p=$(free_port)
"$BDFILTERD" --foreground --control none --device "disk=$DISK" --nbd-listen "unix:$SOCK" \
	--nbd-listen "tcp:0.0.0.0:$p" --tls-creds "$PKI" >"$BDF_LOG" 2>&1 &
BDF_PID=$!
wait_for_socket "$SOCK"
grep -q "listening on tcp:0.0.0.0:$p (TLS required)" "$BDF_LOG" || fail "tcp:0.0.0.0 is not TLS required"
grep -q "listening on unix:$SOCK\$" "$BDF_LOG" || fail "the Unix socket should be in the clear by default"
if nbdinfo "nbd://127.0.0.1:$p/disk" >/dev/null 2>&1; then fail "plaintext over TCP beyond loopback"; fi
nbdinfo --size "nbds://127.0.0.1:$p/disk?tls-certificates=$PKI" >/dev/null || fail "nbds:// over TCP"
nbdcopy "nbds://127.0.0.1:$p/disk?tls-certificates=$PKI" "$T/tcp.img" || fail "nbdcopy over nbds://"
cmp "$T/tcp.img" "$DISK" || fail "nbdcopy over nbds:// differs"
nbdinfo --size "$(uri disk)" >/dev/null || fail "the Unix socket beside it"
bdf_stop

p=$(free_port)
bdf_start --device "disk=$DISK" --nbd-listen "tcp:0.0.0.0:$p" --tls off
nbdinfo --size "nbd://127.0.0.1:$p/disk" >/dev/null || fail "--tls off over TCP"
bdf_stop

# ---- bad TLS options: one line, exit non-zero, nothing left listening ----
bad() {
	if "$BDFILTERD" --foreground --control none --device "disk=$DISK" --nbd-listen "unix:$T/bad.sock" "$@" \
		>"$T/out" 2>&1; then fail "bdfilterd $* started"; fi
	[ -S "$T/bad.sock" ] && fail "bdfilterd $*: left its socket"
	grep -qi -e tls -e psk "$T/out" || fail "bdfilterd $*: no reason: $(cat "$T/out")"
	note "$*: $(head -1 "$T/out")"
}
bad --tls require
bad --tls on
bad --tls maybe --tls-creds "$PKI"
bad --tls-creds "$T/nowhere"
bad --tls-creds "$PKI" --tls-psk "$T/keys.psk"
bad --tls-verify-peer
bad --tls-authz CN=x
mkdir "$T/half"; cp "$PKI/server-cert.pem" "$T/half/"
bad --tls-creds "$T/half"
cp "$PKI/server-cert.pem" "$T/half/server-key.pem"
bad --tls-creds "$T/half"
mkdir "$T/noca"; cp "$PKI/server-cert.pem" "$PKI/server-key.pem" "$T/noca/"
bad --tls-creds "$T/noca" --tls-verify-peer
printf 'alice:xyz\n' >"$T/bad.psk"
bad --tls-psk "$T/bad.psk"
printf '\n' >"$T/empty.psk"
bad --tls-psk "$T/empty.psk"
make_psk "$T/keys.psk" alice
bad --tls-psk "$T/keys.psk" --tls-verify-peer
exit 0
