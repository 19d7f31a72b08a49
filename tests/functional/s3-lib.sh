# A real S3 server on 127.0.0.1 for the tests of the S3 object store
# (sourced after lib.sh, whose $T, fail, skip and note it uses).
#
# s3rver (npm; the version pinned by tests/s3/package-lock.json) is installed
# once with `npm ci` into $BDF_S3_CACHE (default: s3rver-cache in the build
# directory), at test time, never at build time. s3rver 3.7.1 does not check
# SigV4 signatures (a wrong secret passes: see tests/s3/s3proxy.py), so the
# tests reach it through s3proxy.py, which checks each request's signature and
# payload hashes as S3 does before it forwards it. s3proxy.py also plays the
# broken servers (503s, garbage, stalls).
#
#   s3_start             s3rver with bucket $S3_BUCKET, and a checking proxy in
#                        front; exports AWS_* (keys S3RVER/S3RVER) for it
#   s3_proxy ARGS...     another s3proxy.py (ARGS: its options); sets
#                        S3P_PORT, S3P_PID, S3P_LOG
#   s3_kill PID          kill -9 one of them and reap it
#   s3_stop              stop everything started here (also done at exit)

S3_BUCKET=bkt
S3_PIDS=""
: "${BDF_S3_CACHE:=$(dirname "$BDFILTERD")/s3rver-cache}"

_s3_cleanup() {
	_rc=$?
	for _p in $S3_PIDS; do kill -KILL "$_p" 2>/dev/null || true; done
	for _p in $S3_PIDS; do wait "$_p" 2>/dev/null || true; done
	S3_PIDS=""
	(exit $_rc)
	_bdf_cleanup
}
trap _s3_cleanup EXIT

s3_stop() {
	for _p in $S3_PIDS; do kill -KILL "$_p" 2>/dev/null || true; done
	for _p in $S3_PIDS; do wait "$_p" 2>/dev/null || true; done
	S3_PIDS=""
}

s3_kill() {
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	S3_PIDS=$(echo " $S3_PIDS " | sed "s/ $1 / /")
}

# Install s3rver once (a lock against parallel runs; a changed lock file
# reinstalls). Skips the test only if npm is not there at all.
s3_install() {
	command -v npm >/dev/null 2>&1 || skip "npm not installed (scripts/install-deps.sh test installs nodejs)"
	command -v node >/dev/null 2>&1 || skip "node not installed"
	mkdir -p "$BDF_S3_CACHE"
	(
		flock 9
		if [ -f "$BDF_S3_CACHE/node_modules/s3rver/bin/s3rver.js" ] &&
			cmp -s "$BDF_S3_CACHE/package-lock.json" "$BDF_SRCDIR/tests/s3/package-lock.json"; then
			exit 0
		fi
		cp "$BDF_SRCDIR/tests/s3/package.json" "$BDF_SRCDIR/tests/s3/package-lock.json" "$BDF_S3_CACHE/"
		if ! npm ci --prefix "$BDF_S3_CACHE" --no-audit --no-fund --ignore-scripts \
			>"$BDF_S3_CACHE/npm-ci.log" 2>&1; then
			tail -n 20 "$BDF_S3_CACHE/npm-ci.log" >&2
			exit 1
		fi
	) 9>"$BDF_S3_CACHE.lock" || fail "npm ci of s3rver failed (log above)"
}

# A port nobody listens on now.
_s3_free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Can PORT on 127.0.0.1 be connected to?
_s3_port_open() {
	/usr/bin/python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null
}

s3_start() {
	s3_install
	mkdir -p "$T/s3rver"
	S3_PORT=""
	# The port is free when picked, not reserved: another process may take
	# it first, and then s3rver exits, and another port is tried.
	for _try in 1 2 3 4 5; do
		_port=$(_s3_free_port)
		# s3rver's continuation tokens are DES-encrypted: OpenSSL 3 has
		# DES only in its legacy provider (without it a truncated listing
		# is a 500, ERR_OSSL_EVP_UNSUPPORTED).
		node --openssl-legacy-provider "$BDF_S3_CACHE/node_modules/s3rver/bin/s3rver.js" -d "$T/s3rver" -a 127.0.0.1 -p "$_port" \
			--silent --no-vhost-buckets --configure-bucket "$S3_BUCKET" >"$T/s3rver.log" 2>&1 &
		S3_PID=$!
		S3_PIDS="$S3_PIDS $S3_PID"
		_n=600
		while [ $_n -gt 0 ]; do
			if _s3_port_open "$_port"; then S3_PORT=$_port; break; fi
			kill -0 "$S3_PID" 2>/dev/null || break
			sleep 0.05; _n=$((_n - 1))
		done
		[ -n "$S3_PORT" ] && break
		s3_kill "$S3_PID"
	done
	[ -n "$S3_PORT" ] || { cat "$T/s3rver.log" >&2; fail "s3rver did not start"; }
	s3_proxy
	S3_PROXY_PORT=$S3P_PORT
	S3_PROXY_LOG=$S3P_LOG
	export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
	export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PROXY_PORT"
	# libcurl takes proxies from the environment: never for these.
	export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
	unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_REGION AWS_ENDPOINT_URL_S3 || true
	# Nothing of the user's: no ~/.aws files.
	export AWS_SHARED_CREDENTIALS_FILE="$T/no-aws-credentials" AWS_CONFIG_FILE="$T/no-aws-config"
	note "s3rver on 127.0.0.1:$S3_PORT, the checking proxy on 127.0.0.1:$S3_PROXY_PORT"
}

_s3_nproxy=0
s3_proxy() {
	_s3_nproxy=$((_s3_nproxy + 1))
	_pf="$T/s3proxy.$_s3_nproxy.port"
	S3P_LOG="$T/s3proxy.$_s3_nproxy.log"
	: >"$S3P_LOG"
	/usr/bin/python3 "$BDF_SRCDIR/tests/s3/s3proxy.py" --upstream "127.0.0.1:${S3_PORT:-1}" \
		--port-file "$_pf" --log "$S3P_LOG" "$@" 2>"$T/s3proxy.$_s3_nproxy.err" &
	S3P_PID=$!
	S3_PIDS="$S3_PIDS $S3P_PID"
	_n=400
	while [ ! -s "$_pf" ]; do
		kill -0 "$S3P_PID" 2>/dev/null || { cat "$T/s3proxy.$_s3_nproxy.err" >&2; fail "s3proxy.py exited"; }
		_n=$((_n - 1)); [ $_n -gt 0 ] || fail "s3proxy.py did not start"
		sleep 0.05
	done
	S3P_PORT=$(cat "$_pf")
}
