# TLS credentials for tests, made by GnuTLS's certtool and psktool (sourced).
# The layout is QEMU's tls-creds-x509, which bdfilterd (--tls-creds), libnbd
# (tls-certificates=) and qemu (--object tls-creds-x509,dir=) all read:
# ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem.

# _certtool ARGS...: certtool, its chatter in $1.log beside the output only on failure.
_certtool() {
	_log=$(mktemp)
	certtool "$@" >"$_log.out" 2>"$_log" || { cat "$_log" >&2; rm -f "$_log" "$_log.out"; return 1; }
	rm -f "$_log" "$_log.out"
}

# make_ca DIR [CN]: DIR/ca-key.pem and DIR/ca-cert.pem.
make_ca() {
	mkdir -p "$1"
	certtool --generate-privkey --key-type=ecdsa --outfile "$1/ca-key.pem" 2>/dev/null
	printf 'cn = %s\nca\ncert_signing_key\nexpiration_days = 30\n' "${2:-bdfilter test CA}" >"$1/ca.info"
	_certtool --generate-self-signed --load-privkey "$1/ca-key.pem" --template "$1/ca.info" \
		--outfile "$1/ca-cert.pem"
}

# make_cert DIR CADIR server|client CN [expired]: DIR/ROLE-cert.pem and
# DIR/ROLE-key.pem signed by CADIR's CA (valid 30 days, or expired in 2020),
# and a copy of the CA certificate in DIR/ca-cert.pem.
make_cert() {
	_dir=$1 _ca=$2 _role=$3 _cn=$4
	mkdir -p "$_dir"
	certtool --generate-privkey --key-type=ecdsa --outfile "$_dir/$_role-key.pem" 2>/dev/null
	{
		echo "organization = bdfilter test"
		echo "cn = $_cn"
		if [ "$_role" = server ]; then
			echo "dns_name = localhost"
			echo "ip_address = 127.0.0.1"
			echo "tls_www_server"
		else
			echo "tls_www_client"
		fi
		echo "signing_key"
		echo "encryption_key"
		if [ "${5:-}" = expired ]; then
			echo 'activation_date = "2020-01-01 00:00:00 UTC"'
			echo 'expiration_date = "2020-02-01 00:00:00 UTC"'
		else
			echo "expiration_days = 30"
		fi
	} >"$_dir/$_role.info"
	_certtool --generate-certificate --load-ca-certificate "$_ca/ca-cert.pem" \
		--load-ca-privkey "$_ca/ca-key.pem" --load-privkey "$_dir/$_role-key.pem" \
		--template "$_dir/$_role.info" --outfile "$_dir/$_role-cert.pem"
	[ "$_dir/ca-cert.pem" -ef "$_ca/ca-cert.pem" ] || cp "$_ca/ca-cert.pem" "$_dir/ca-cert.pem"
}

# make_x509 DIR: a CA, a server certificate for localhost and 127.0.0.1, and a
# client certificate whose DN is "CN=backup,O=bdfilter test", all in DIR.
make_x509() {
	make_ca "$1"
	make_cert "$1" "$1" server localhost
	make_cert "$1" "$1" client backup
}

# make_psk FILE IDENTITY: a fresh random key for IDENTITY appended to FILE.
make_psk() {
	psktool -u "$2" -p "$1" >/dev/null
	chmod 600 "$1"
}
