# shellcheck shell=bash disable=SC2154,SC2034
# (SC2154, SC2034: the variables come from, and go to, bench/run.sh)
# NBD over TLS, section "tls" of make bench (sourced by bench/run.sh; alone:
# `BENCH_ONLY=tls make bench`): bdfilterd and nbdkit, each with --tls require
# and the same X.509 credentials (made by certtool: ECDSA P-256, TLS 1.3,
# AES-256-GCM as GnuTLS picks it), on the same warm file, the four jobs of the
# servers section through fio's nbd engine over nbds+unix://, servers taking
# turns within each round.
#
# fio's engine cannot name certificates in its URI (libnbd refuses local files
# there), and libnbd reads its default directory from $HOME only when not
# root: so fio runs as nobody with a HOME holding .pki/libnbd, and the
# servers' socket is made writable for it.

tls_dir=$(mktemp -d /tmp/bdfilter-bench-tls.XXXXXX)
chmod 755 "$tls_dir"
tls_sock="$tls_dir/nbd.sock"
tls_t0=$(date +%s)
tls_cleanup() {
	[ -n "$tls_dir" ] && rm -rf "$tls_dir"
	tls_dir=
}
# shellcheck source=tests/functional/tls-lib.sh
. "$bench_dir/../tests/functional/tls-lib.sh"
make_x509 "$tls_dir/pki"
mkdir -p "$tls_dir/home/.pki/libnbd"
cp "$tls_dir/pki/ca-cert.pem" "$tls_dir/pki/client-cert.pem" "$tls_dir/pki/client-key.pem" "$tls_dir/home/.pki/libnbd/"
chown -R 65534:65534 "$tls_dir/home"
[ -f "$img" ] || head -c "$((size_mib << 20))" /dev/urandom >"$img"
cat "$img" >/dev/null

tls_start() { # NAME
	rm -f "$tls_sock"
	case $1 in
	bdf_tls)
		"$bdfilterd" --foreground --nbd-listen "unix:$tls_sock" --control none \
			--device "disk=$img" --tls require --tls-creds "$tls_dir/pki" --log-level warn \
			2>>"$work/server.log" &
		export_name=disk ;;
	nbdkit_tls)
		nbdkit --foreground --unix "$tls_sock" --tls require \
			--tls-certificates "$tls_dir/pki" file "$img" 2>>"$work/server.log" &
		export_name= ;;
	esac
	server_pid=$!
	for _ in $(seq 200); do
		[ -S "$tls_sock" ] && { chmod 666 "$tls_sock"; return 0; }
		sleep 0.05
	done
	echo "bench tls: $1 did not start" >&2
	cat "$work/server.log" >&2
	return 1
}
tls_run() { # SERVER ROUND JOB RW BS DEPTH
	local sv=$1 round=$2 job=$3 rw=$4 bs=$5 depth=$6 load
	tls_start "$sv"
	load=$(cut -d' ' -f1 /proc/loadavg)
	setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$tls_dir/home" \
		fio --name=bench --ioengine=nbd --uri="nbds+unix:///$export_name?socket=$tls_sock" \
		--output-format=json --rw="$rw" --bs="$bs" --iodepth="$depth" --size="${size_mib}M" \
		--time_based --runtime="$runtime" --ramp_time=1 >"$work/fio.json" 2>"$work/fio.err" ||
		{ cat "$work/fio.err" >&2; return 1; }
	$PY "$bench_dir/report.py" fio "$work/fio.json" section=tls "round=$round" "server=$sv" "job=$job" \
		"load1=$load" >>"$results"
	stop_server
	rm -f "$tls_sock"
}

$PY - "$work/tls-method.json" <<PY
import json, sys
json.dump({"size_mib": $size_mib, "rounds": $rounds, "runtime_s": $runtime,
           "credentials": "X.509, ECDSA P-256 (certtool), --tls require on both servers",
           "jobs": {j.split()[0]: "%s %s iodepth %s over nbds+unix://, warm cache" % tuple(j.split()[1:])
                    for j in """$(printf '%s\n' "${jobs[@]}")""".splitlines()}},
          open(sys.argv[1], "w"), indent=1)
PY
echo "bench tls: ${size_mib} MiB file, ${runtime}s per job and round, $(gnutls-cli --version 2>/dev/null | head -1)"
for j in "${jobs[@]}"; do
	for round in $(seq "$rounds"); do
		for sv in $( ((round % 2)) && echo bdf_tls nbdkit_tls || echo nbdkit_tls bdf_tls); do
			# shellcheck disable=SC2086
			tls_run "$sv" "$round" $j
		done
	done
	echo "bench tls: ${j%% *} done ($(($(date +%s) - tls_t0)) s)" >&2
done
tls_cleanup
