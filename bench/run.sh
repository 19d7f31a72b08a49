#!/bin/bash
# make bench: bdfilterd against nbdkit's file plugin and qemu-nbd, in one run, on
# the same file, with fio's nbd engine. Prints MiB/s and IOPS per server and job,
# and the ratios bdfilterd/nbdkit and bdfilterd/qemu-nbd; writes the figures as
# JSON to BUILD/bench/results.json. Then the copy-before-write section
# (bench/cbw.sh: what a guest feels while a snapshot is held, against
# qemu-storage-daemon's copy-before-write filter, on a 4 GiB file on disk, cold
# cache), bench/tls.sh: the four jobs over TLS against nbdkit with the same
# credentials, bench/wil.sh: what the CBT's write-intent log (--state-dir) costs a
# writer, bench/mirror.sh: the mirror's resync against nbdcopy and writes during
# a resync, and bench/backup.sh: the backup client (full and incremental) on a
# 4 GiB device.
#
# The machine has 2 cores: fio and the server under test share them, so these are
# figures for "client and server on one small box", the same for every server.
# Every figure is min / median / max of the rounds (servers take turns within one).
#
# Usage: bench/run.sh [BUILD [SECTIONS]]; SECTIONS (or BENCH_ONLY) is a comma
# separated list of servers, pairs, tls, cbw, wil, mirror, backup, backup2 (default: all), e.g.
# `BENCH_ONLY=cbw make bench` or `bash bench/run.sh build cbw`.
#
# Environment: BENCH_RUNTIME (seconds per job, default 5), BENCH_ROUNDS (default 3),
# BENCH_SIZE_MIB (file size, default 1024), BDF_ARGS (extra bdfilterd arguments);
# for the cbw section see bench/cbw.sh. docs/bench.md describes it all.
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
sections=${2:-${BENCH_ONLY:-servers,pairs,tls,cbw,wil,mirror,backup,backup2}}
[ "$sections" = all ] && sections=servers,pairs,tls,cbw,wil,mirror,backup,backup2
for s in ${sections//,/ }; do
	case $s in
	servers | pairs | tls | cbw | wil | mirror | backup | backup2) ;;
	*) echo "bench: unknown section '$s' (servers, pairs, tls, cbw, wil, mirror, backup, backup2)" >&2; exit 2 ;;
	esac
done
want() { [[ ",${sections// /,}," == *",$1,"* ]]; }
bench_dir=$(cd "$(dirname "$0")" && pwd)
t_start=$(date +%s)
bdfilterd="$build/bdfilterd"
runtime=${BENCH_RUNTIME:-5}
size_mib=${BENCH_SIZE_MIB:-1024}
out_dir="$build/bench"
mkdir -p "$out_dir"
export PATH="/usr/sbin:/usr/bin:$PATH"
PY=/usr/bin/python3

work=$(mktemp -d /tmp/bdfilter-bench.XXXXXX)
server_pid=
cbw_dir=
cleanup() {
	stop_server
	if declare -F cbw_cleanup >/dev/null; then cbw_cleanup; fi
	if declare -F wil_cleanup >/dev/null; then wil_cleanup; fi
	if declare -F mirror_cleanup >/dev/null; then mirror_cleanup; fi
	if declare -F tls_cleanup >/dev/null; then tls_cleanup; fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

img="$work/disk.img"
sock="$work/nbd.sock"

# ---- servers: start_NAME starts one on $sock, exporting $img ----
start_bdfilterd() {
	# shellcheck disable=SC2086
	"$bdfilterd" --foreground --nbd-listen "unix:$sock" --device "disk=$img" ${BDF_ARGS:-} \
		--log-level warn 2>"$work/server.log" &
	server_pid=$!
	export_name=disk
}
start_nbdkit() {
	# parallel thread model, 16 threads per connection (its defaults)
	nbdkit --foreground --unix "$sock" file "$img" 2>"$work/server.log" &
	server_pid=$!
	export_name=
}
start_qemu_nbd() {
	# writeback cache (its default), thread pool AIO, multi-conn allowed
	qemu-nbd --socket="$sock" --format=raw --persistent --shared=8 --cache=writeback --aio=threads \
		"$img" 2>"$work/server.log" &
	server_pid=$!
	export_name=
}
# With the tracker attached (issue 3 (a)).
start_bdfilterd_tracker() {
	"$bdfilterd" --foreground --nbd-listen "unix:$sock" --control "$work/control.sock" \
		--device "disk=$img,filter=tracker" --log-level warn 2>"$work/server.log" &
	server_pid=$!
	export_name=disk
}
# A snapshot taken just before the job, with a fresh storage file: every chunk
# the job touches is copied once (issue 3 (b)).
start_bdfilterd_snapshot() {
	start_bdfilterd_tracker
	wait_server
	rm -f "$work/diff.img"
	truncate -s "$((2 * size_mib))M" "$work/diff.img"
	local id
	id=$("$build/bdfilter" --control "$work/control.sock" snapshot_create -d disk | sed -n 's/^id=//p')
	"$build/bdfilter" --control "$work/control.sock" snapshot_appendstorage -i "$id" -f "$work/diff.img" >/dev/null
	"$build/bdfilter" --control "$work/control.sock" snapshot_take -i "$id" >/dev/null
}
start_bdfilterd_image() {
	start_bdfilterd_snapshot
	export_name=disk-image
}
# QEMU's answer to the same job: a copy-before-write filter in front of the
# disk, its target a sparse file, and a snapshot-access node (image fleecing).
start_qsd_cbw() {
	rm -f "$work/cbw-target.img"
	truncate -s "${size_mib}M" "$work/cbw-target.img"
	qemu-storage-daemon \
		--blockdev "driver=file,filename=$img,node-name=base-file" \
		--blockdev driver=raw,file=base-file,node-name=base \
		--blockdev "driver=file,filename=$work/cbw-target.img,node-name=tgt-file" \
		--blockdev driver=raw,file=tgt-file,node-name=tgt \
		--blockdev driver=copy-before-write,file=base,target=tgt,node-name=cbw \
		--blockdev driver=snapshot-access,file=cbw,node-name=acc \
		--nbd-server "addr.type=unix,addr.path=$sock" \
		--export type=nbd,id=e0,node-name=cbw,name=disk,writable=on \
		--export type=nbd,id=e1,node-name=acc,name=snap 2>"$work/server.log" &
	server_pid=$!
	export_name=disk
}

stop_server() {
	if [ -n "$server_pid" ]; then
		kill -TERM "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
		server_pid=
	fi
	rm -f "$sock" "$work/control.sock"
}
wait_server() {
	for _ in $(seq 200); do
		[ -S "$sock" ] && return 0
		kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; return 1; }
		sleep 0.05
	done
	echo "bench: server did not create $sock" >&2
	return 1
}

# ---- jobs: name rw bs iodepth ----
jobs=(
	"seqread read 1M 16"
	"seqwrite write 1M 16"
	"randread randread 4k 32"
	"randwrite randwrite 4k 32"
)

# fio on $export_name at $sock with the given options; one JSON line on stdout
# with the figures and the KEY=VALUE pairs given before "--".
# The cold-cache sections (wil, mirror): sync, then drop the page cache, as
# root; otherwise their figures are warm-cache ones and say so.
page_cache=cold
[ -w /proc/sys/vm/drop_caches ] || page_cache=warm
drop_page_cache() {
	sync
	if [ "$page_cache" = cold ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
run_fio() { # KEY=VALUE... -- fio options...
	local kv=()
	while [ "$1" != -- ]; do kv+=("$1"); shift; done
	shift
	local load
	load=$(cut -d' ' -f1 /proc/loadavg)
	fio --name=bench --ioengine=nbd --uri="nbd+unix:///$export_name?socket=$sock" --output-format=json \
		"$@" >"$work/fio.json" 2>"$work/fio.err" || { cat "$work/fio.err" >&2; return 1; }
	$PY "$bench_dir/report.py" fio "$work/fio.json" "${kv[@]}" "load1=$load"
}
run_job() { # section round server job rw bs depth -> JSON line
	local section=$1 round=$2 server=$3 job=$4 rw=$5 bs=$6 depth=$7
	run_fio "section=$section" "round=$round" "server=$server" "job=$job" -- \
		--rw="$rw" --bs="$bs" --iodepth="$depth" --size="${size_mib}M" \
		--time_based --runtime="$runtime" --ramp_time=1
}

echo "bench: sections $sections; fio $(fio --version), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
results="$work/results.jsonl"
: >"$results"
if want servers || want pairs; then
echo "bench: ${size_mib} MiB file in $work, ${runtime}s per job and round, warm page cache"
head -c "$((size_mib << 20))" /dev/urandom >"$img"
fi

servers=(bdfilterd nbdkit qemu_nbd)
[ -x "$bdfilterd" ] || { echo "bench: $bdfilterd is missing; build it first" >&2; exit 1; }
command -v nbdkit >/dev/null || { echo "bench: nbdkit is not installed" >&2; exit 1; }
command -v qemu-nbd >/dev/null || { echo "bench: qemu-nbd is not installed" >&2; exit 1; }
command -v qemu-storage-daemon >/dev/null || { echo "bench: qemu-storage-daemon is not installed" >&2; exit 1; }

# Servers take turns on every job, ROUNDS times, and the median counts: a
# shared 2-core VM drifts by more than the differences being measured.
rounds=${BENCH_ROUNDS:-3}
if want servers; then
cat "$img" >/dev/null # the same warm page cache for every server
for j in "${jobs[@]}"; do
	for round in $(seq "$rounds"); do
		for server in "${servers[@]}"; do
			"start_$server"
			wait_server
			# shellcheck disable=SC2086
			run_job servers "$round" "$server" $j >>"$results"
			stop_server
		done
	done
	echo "bench: ${j%% *} done" >&2
done
fi

# Pairs: the same job on two set-ups, taking turns, ROUNDS times.
pairs=(
	"tracker:randwrite randwrite 4k 32:bdfilterd_tracker:bdfilterd"
	"tracker:seqwrite write 1M 16:bdfilterd_tracker:bdfilterd"
	"snapshot:randwrite randwrite 4k 32:bdfilterd_snapshot:qsd_cbw"
	"image:randread randread 4k 32:bdfilterd_image:bdfilterd_snapshot"
	"image:seqread read 1M 16:bdfilterd_image:bdfilterd_snapshot"
)
if want pairs; then
cat "$img" >/dev/null
for p in "${pairs[@]}"; do
	IFS=: read -r label job a b <<<"$p"
	for round in $(seq "$rounds"); do
		for server in "$a" "$b"; do
			"start_$server"
			wait_server
			# shellcheck disable=SC2086
			run_job pairs "$round" "$server" $job | sed "s/^{/{\"pair\": \"$label\", /" >>"$results"
			stop_server
		done
	done
	echo "bench: $label ${job%% *} done" >&2
done
fi

if want tls; then
	# shellcheck source=bench/tls.sh
	. "$bench_dir/tls.sh"
fi
if want cbw; then
	# shellcheck source=bench/cbw.sh
	. "$bench_dir/cbw.sh"
fi
if want wil; then
	# shellcheck source=bench/wil.sh
	. "$bench_dir/wil.sh"
fi
if want mirror; then
	# shellcheck source=bench/mirror.sh
	. "$bench_dir/mirror.sh"
fi

if [ -s "$results" ]; then
	$PY "$bench_dir/report.py" report "$results" "$out_dir/results.json"
fi
echo "bench: $(( $(date +%s) - t_start )) s so far; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The backup client on a 4 GiB device (issue 4): full against nbdcopy, and an
# incremental of 1% of the blocks. Its own script, its own files.
if want backup; then
	echo
	bash "$bench_dir/backup.sh" "$build"
	echo "bench: $(( $(date +%s) - t_start )) s so far"
fi

# Repository version 2 (issue 12): dedup, zstd, restore, serve, text, S3.
if want backup2; then
	echo
	bash "$bench_dir/backup2.sh" "$build"
	echo "bench: $(( $(date +%s) - t_start )) s in all"
fi
