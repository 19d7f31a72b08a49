# shellcheck shell=bash disable=SC2154,SC2034
# (SC2154, SC2034: the variables come from, and go to, bench/run.sh)
# The copy-before-write section of make bench, sourced by bench/run.sh (section
# "cbw"; run it alone with `BENCH_ONLY=cbw make bench` or `bash bench/run.sh build cbw`).
# What a guest feels while a backup snapshot is held, on an origin file on disk
# with a cold page cache:
#  - first-touch: right after a fresh snapshot, BENCH_CBW_IOS (8000) random 4 KiB
#    writes at iodepth 32, each to a distinct block, the same offsets for every
#    server: (a) bdfilterd, snapshot, default 256 KiB chunks; (b) the same with
#    64 KiB chunks; (c) qemu-storage-daemon with a copy-before-write filter (64 KiB
#    clusters); (d) bdfilterd with the tracker and no snapshot; (e) bdfilterd alone;
#  - steady: a snapshot in which every chunk is copied already (the whole device
#    written once, sequentially, under it), random 4 KiB writes at iodepth 32 for
#    BENCH_RUNTIME seconds, against (d);
#  - seq-write: BENCH_SEQ_MIB (1024) MiB of sequential 1 MiB writes at iodepth
#    BENCH_SEQ_DEPTH (8) under a fresh snapshot: (a), (b), (c), (d).
# Each job: BENCH_ROUNDS rounds; in each, every server once, a fresh server and a
# fresh snapshot (and difference storage or target file) each time, the page
# cache synced and dropped right before fio starts; the order of the servers
# rotates from round to round. Figures go to $results (section "cbw") for
# bench/report.py, the method to $work/cbw-method.json.
#
# Environment: BENCH_DIR (where the files go, default /var/tmp: on disk, not
# tmpfs), BENCH_CBW_MIB (origin size, default 4096), BENCH_CBW_IOS (8000),
# BENCH_SEQ_MIB (1024), BENCH_SEQ_DEPTH (8), BENCH_SEED (42).
# Uses from run.sh: $build $bdfilterd $work $sock $results $rounds $runtime $PY,
# run_fio, wait_server, stop_server.

cbw_mib=${BENCH_CBW_MIB:-4096}
cbw_ios=${BENCH_CBW_IOS:-8000}
seq_mib=${BENCH_SEQ_MIB:-1024}
seq_depth=${BENCH_SEQ_DEPTH:-8}
cbw_seed=${BENCH_SEED:-42}
cbw_dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bdfilter-bench-cbw.XXXXXX")
cbw_origin="$cbw_dir/origin.img"
cbw_storage_mib=$((cbw_mib + 256)) # a sparse file: room for every chunk, whatever the chunk size
steady_pid=
cbw_t0=$(date +%s)

cbw_cleanup() {
	if [ -n "$steady_pid" ]; then
		kill -TERM "$steady_pid" 2>/dev/null || true
		wait "$steady_pid" 2>/dev/null || true
		steady_pid=
	fi
	[ -n "$cbw_dir" ] && rm -rf "$cbw_dir"
	cbw_dir=
}

read -r cbw_dev cbw_fs < <(df --output=source,fstype "$cbw_dir" | tail -1)
case $cbw_fs in
tmpfs | ramfs)
	echo "bench cbw: $cbw_dir is on $cbw_fs, not a disk; set BENCH_DIR to a directory on a disk" >&2
	exit 1
	;;
esac
if [ -w /proc/sys/vm/drop_caches ]; then
	cbw_cache=cold
else
	cbw_cache=warm
	echo "bench cbw: WARNING: cannot write /proc/sys/vm/drop_caches (not root): the page cache is" \
		"NOT dropped, the figures below are warm-cache figures" >&2
fi
# Write back everything dirty (the last job's copies too), then drop the page
# cache: the origin's chunks come from the disk, as they would for a guest
# whose disk is not in the host's cache.
cbw_cold() {
	sync
	if [ "$cbw_cache" = cold ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# ---- servers: cbw_start NAME starts it on $sock, exporting $cbw_origin as "disk" ----
cbw_bdfilterd() { # NBD-SOCKET CONTROL-SOCKET DEVICE-SUFFIX [bdfilterd options]
	local nbd=$1 ctl=$2 suffix=$3
	shift 3
	rm -f "$nbd" "$ctl"
	"$bdfilterd" --foreground --nbd-listen "unix:$nbd" --control "$ctl" \
		--device "disk=$cbw_origin$suffix" "$@" --log-level warn 2>>"$work/server.log" &
}
cbw_wait_control() {
	for _ in $(seq 200); do
		[ -S "$1" ] && return 0
		sleep 0.05
	done
	echo "bench cbw: no control socket $1" >&2
	return 1
}
# A fresh snapshot of "disk": a fresh sparse storage file, created, appended, taken.
cbw_snapshot() { # CONTROL-SOCKET STORAGE-FILE
	local ctl=$1 storage=$2 id
	rm -f "$storage"
	truncate -s "${cbw_storage_mib}M" "$storage"
	cbw_wait_control "$ctl"
	id=$("$build/bdfilter" --control "$ctl" snapshot_create -d disk | sed -n 's/^id=//p')
	"$build/bdfilter" --control "$ctl" snapshot_appendstorage -i "$id" -f "$storage" >/dev/null
	"$build/bdfilter" --control "$ctl" snapshot_take -i "$id" --no-freeze >/dev/null
}
# qemu-storage-daemon as a backup would set it up (image fleecing): a
# copy-before-write filter over the origin, its target a fresh sparse raw file
# (block-copy's cluster size is then its default, 64 KiB), a snapshot-access
# node on it (exported read-only, not read here), the filter exported writable.
# Caches as qemu's defaults: cache.direct=off (page cache), aio=threads.
cbw_qsd() {
	rm -f "$cbw_dir/cbw-target.img"
	truncate -s "${cbw_mib}M" "$cbw_dir/cbw-target.img"
	qemu-storage-daemon \
		--blockdev "driver=file,filename=$cbw_origin,node-name=base-file" \
		--blockdev driver=raw,file=base-file,node-name=base \
		--blockdev "driver=file,filename=$cbw_dir/cbw-target.img,node-name=tgt-file" \
		--blockdev driver=raw,file=tgt-file,node-name=tgt \
		--blockdev driver=copy-before-write,file=base,target=tgt,node-name=cbw \
		--blockdev driver=snapshot-access,file=cbw,node-name=acc \
		--nbd-server "addr.type=unix,addr.path=$sock" \
		--export type=nbd,id=e0,node-name=cbw,name=disk,writable=on \
		--export type=nbd,id=e1,node-name=acc,name=snap 2>>"$work/server.log" &
}
cbw_start() { # NAME
	case $1 in
	bdf_snap | bdf_tracker) cbw_bdfilterd "$sock" "$work/control.sock" ,filter=tracker ;;
	bdf_snap64) cbw_bdfilterd "$sock" "$work/control.sock" ,filter=tracker --param chunk_minimum_shift=16 ;;
	bdf_plain) cbw_bdfilterd "$sock" "$work/control.sock" "" ;;
	qsd_cbw) cbw_qsd ;;
	*) echo "bench cbw: no server $1" >&2; return 1 ;;
	esac
	server_pid=$!
	export_name=disk
	wait_server
	case $1 in
	bdf_snap | bdf_snap64) cbw_snapshot "$work/control.sock" "$cbw_dir/diff.img" ;;
	esac
}
# MiB copied before writes during the job (a check that copy-before-write did
# happen: the storage file's allocated bytes, since bdfilterd reserves a chunk
# but copies only the blocks written), on stdout; fails when a bdfilterd
# snapshot broke (it would stop copying).
cbw_copied() { # NAME [CONTROL-SOCKET STORAGE-FILE]
	local info ec blocks
	case $1 in
	bdf_snap | bdf_snap64 | bdf_snap_full)
		info=$("$build/bdfilter" --control "${2:-$work/control.sock}" snapshot_info -d disk)
		ec=$(sed -n 's/^error_code=//p' <<<"$info")
		if [ "$ec" != 0 ]; then
			echo "bench cbw: $1: the snapshot broke during the job: $(tr "\n" " " <<<"$info")" >&2
			return 1
		fi
		blocks=$(stat -c %b "${3:-$cbw_dir/diff.img}")
		echo "$((blocks * 512 >> 20))"
		;;
	qsd_cbw)
		kill -0 "$server_pid" 2>/dev/null || { echo "bench cbw: qemu-storage-daemon died" >&2; cat "$work/server.log" >&2; return 1; }
		blocks=$(stat -c %b "$cbw_dir/cbw-target.img")
		echo "$((blocks * 512 >> 20))"
		;;
	*) echo 0 ;;
	esac
}
cbw_record() { # NAME ROUND JOB COPIED-MIB < JSON line from run_fio
	local line
	line=$(cat)
	echo "${line%\}}, \"copied_mib\": $4}" >>"$results"
}

# One job, BENCH_ROUNDS rounds; servers take turns, their order rotating.
cbw_job() { # JOB "SERVER..." fio options...
	local job=$1 round i n sv copied
	local -a svs
	read -ra svs <<<"$2"
	shift 2
	n=${#svs[@]}
	for round in $(seq "$rounds"); do
		for i in $(seq 0 $((n - 1))); do
			sv=${svs[$(((i + round - 1) % n))]}
			cbw_start "$sv"
			cbw_cold
			run_fio section=cbw "round=$round" "server=$sv" "job=$job" "cache=$cbw_cache" -- "$@" >"$work/line"
			copied=$(cbw_copied "$sv")
			cbw_record "$sv" "$round" "$job" "$copied" <"$work/line"
			stop_server
		done
	done
	echo "bench cbw: $job done ($(($(date +%s) - cbw_t0)) s in the section, load average" \
		"$(cut -d' ' -f1-3 /proc/loadavg))" >&2
}

first_touch=(--rw=randwrite --bs=4k --iodepth=32 --size="${cbw_mib}M" --number_ios="$cbw_ios"
	--randrepeat=1 --randseed="$cbw_seed" --norandommap=0)
steady=(--rw=randwrite --bs=4k --iodepth=32 --size="${cbw_mib}M" --time_based --runtime="$runtime"
	--ramp_time=1 --randrepeat=1 --randseed="$cbw_seed")
seq_write=(--rw=write --bs=1M --iodepth="$seq_depth" --size="${seq_mib}M")
prefill=(--rw=write --bs=1M --iodepth="$seq_depth" --size="${cbw_mib}M")

echo "bench cbw: origin $cbw_origin: ${cbw_mib} MiB of random data on $cbw_dev ($cbw_fs), written and synced"
echo "bench cbw: before each job a fresh server, a fresh snapshot and storage, then sync and the page cache" \
	"$([ "$cbw_cache" = cold ] && echo "dropped (echo 3 > /proc/sys/vm/drop_caches)" || echo "NOT dropped (not root)")"
echo "bench cbw: bdfilterd: snapshot_create -d disk, snapshot_appendstorage of a fresh sparse" \
	"${cbw_storage_mib} MiB file next to the origin, snapshot_take --no-freeze"
echo "bench cbw: qemu-storage-daemon $(qemu-storage-daemon --version | sed -n '1s/.*version \([^ ]*\).*/\1/p'):" \
	"copy-before-write node, its target a fresh sparse raw file next to the origin (64 KiB clusters)," \
	"snapshot-access node, cache.direct=off, aio=threads"
echo "bench cbw: servers take turns in each of $rounds rounds, their order rotating; fio's nbd engine, one" \
	"connection, no flush at the end (writes and copies may still be in the page cache, as with cache=writeback)"
t=$(date +%s)
head -c "$((cbw_mib << 20))" /dev/urandom >"$cbw_origin"
sync
echo "bench cbw: origin written in $(($(date +%s) - t)) s; load average $(cut -d' ' -f1-3 /proc/loadavg)"

$PY - "$work/cbw-method.json" <<PY
import json, sys
json.dump({
    "origin": "$cbw_origin", "origin_mib": $cbw_mib, "device": "$cbw_dev", "fstype": "$cbw_fs",
    "cache": "$cbw_cache", "rounds": $rounds, "seed": $cbw_seed,
    "bdfilterd_storage": "fresh sparse file of $cbw_storage_mib MiB on the same file system, snapshot_take --no-freeze",
    "qsd": "copy-before-write + snapshot-access, target a fresh sparse raw file (64 KiB clusters), cache.direct=off, aio=threads",
    "jobs": {
        "first-touch": "$cbw_ios random 4 KiB writes, iodepth 32, right after a fresh snapshot, $cbw_cache cache,"
                       " seed $cbw_seed, random map (each a distinct block), the same offsets for every server",
        "steady": "random 4 KiB writes, iodepth 32, ${runtime}s (+1s ramp), every chunk copied already,"
                  " $cbw_cache cache",
        "seq-write": "$seq_mib MiB of sequential 1 MiB writes, iodepth $seq_depth, right after a fresh snapshot,"
                     " $cbw_cache cache",
    },
}, open(sys.argv[1], "w"), indent=1)
PY

cbw_job first-touch "bdf_snap bdf_snap64 qsd_cbw bdf_tracker bdf_plain" "${first_touch[@]}"

# steady: one bdfilterd holding a snapshot for the whole job, on its own
# sockets, every chunk copied by a sequential write of the whole device under
# the snapshot (the prefill, cold cache, reported for information); taking
# turns with a fresh bdfilterd with the tracker and no snapshot on the same file.
steady_sock="$work/steady.sock"
steady_ctl="$work/steady-control.sock"
cbw_bdfilterd "$steady_sock" "$steady_ctl" ,filter=tracker
steady_pid=$!
for _ in $(seq 200); do [ -S "$steady_sock" ] && break; sleep 0.05; done
cbw_snapshot "$steady_ctl" "$cbw_dir/steady-diff.img"
cbw_cold
sock_saved=$sock
sock=$steady_sock
run_fio section=cbw round=1 server=bdf_snap_full job=prefill "cache=$cbw_cache" -- "${prefill[@]}" >"$work/line"
copied=$(cbw_copied bdf_snap_full "$steady_ctl" "$cbw_dir/steady-diff.img")
sock=$sock_saved
cbw_record bdf_snap_full 1 prefill "$copied" <"$work/line"
if [ "$copied" -lt "$cbw_mib" ]; then
	echo "bench cbw: the prefill copied $copied MiB, not all $cbw_mib" >&2
	exit 1
fi
for round in $(seq "$rounds"); do
	for sv in $( ((round % 2)) && echo bdf_snap_full bdf_tracker || echo bdf_tracker bdf_snap_full); do
		if [ "$sv" = bdf_snap_full ]; then
			cbw_cold
			sock=$steady_sock
			run_fio section=cbw "round=$round" server=bdf_snap_full job=steady "cache=$cbw_cache" -- \
				"${steady[@]}" >"$work/line"
			sock=$sock_saved
			copied=$(cbw_copied bdf_snap_full "$steady_ctl" "$cbw_dir/steady-diff.img")
		else
			cbw_start bdf_tracker
			cbw_cold
			run_fio section=cbw "round=$round" server=bdf_tracker job=steady "cache=$cbw_cache" -- \
				"${steady[@]}" >"$work/line"
			copied=0
			stop_server
		fi
		cbw_record "$sv" "$round" steady "$copied" <"$work/line"
	done
done
kill -TERM "$steady_pid"
wait "$steady_pid" || true
steady_pid=
rm -f "$cbw_dir/steady-diff.img"
echo "bench cbw: steady done ($(($(date +%s) - cbw_t0)) s in the section, load average" \
	"$(cut -d' ' -f1-3 /proc/loadavg))" >&2

cbw_job seq-write "bdf_snap bdf_snap64 qsd_cbw bdf_tracker" "${seq_write[@]}"
cbw_cleanup
echo "bench cbw: $(($(date +%s) - cbw_t0)) s for the section"
