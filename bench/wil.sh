# shellcheck shell=bash disable=SC2154,SC2034
# (SC2154, SC2034: the variables come from, and go to, bench/run.sh)
# The write-intent log's section of make bench (section "wil", sourced by
# bench/run.sh; alone: `BENCH_ONLY=wil make bench`). What --state-dir costs a
# writer, on a 4 GiB origin file on disk, page cache dropped before each job:
#  - first-touch: a fresh server, BENCH_WIL_IOS (16000) random 4 KiB writes at
#    iodepth 32, each to a distinct block, the same offsets for every server:
#    (w) bdfilterd, tracker, --state-dir: every region of the log clean at the
#    start, so the first write to each 4 MiB region waits for a flush of the
#    log (shared by the writers that miss at once); (t) the tracker without
#    --state-dir (no log);
#  - steady: random 4 KiB writes at iodepth 32 for BENCH_RUNTIME seconds:
#    (w) with every region of the log dirty already, against (t); both servers
#    get the same prefill first (one 4 KiB write per MiB), then sync and drop.
# Rounds and order as in the cbw section. Figures go to $results (section "wil").
#
# Environment: BENCH_DIR (default /var/tmp), BENCH_WIL_MIB (origin size, 4096),
# BENCH_WIL_IOS (16000), BENCH_SEED (42).

wil_mib=${BENCH_WIL_MIB:-4096}
wil_ios=${BENCH_WIL_IOS:-16000}
wil_seed=${BENCH_SEED:-42}
wil_dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bdfilter-bench-wil.XXXXXX")
wil_origin="$wil_dir/origin.img"
wil_t0=$(date +%s)
read -r wil_dev wil_fs < <(df --output=source,fstype "$wil_dir" | tail -1)
wil_cache=$page_cache

wil_cleanup() {
	[ -n "$wil_dir" ] && rm -rf "$wil_dir"
	wil_dir=
}
wil_start() { # NAME
	local args=()
	case $1 in
	bdf_tracker) ;;
	bdf_wil) rm -rf "$wil_dir/state"; args=(--state-dir "$wil_dir/state") ;;
	bdf_wil_dirty) rm -rf "$wil_dir/state"; args=(--state-dir "$wil_dir/state") ;;
	*) echo "bench wil: no server $1" >&2; return 1 ;;
	esac
	rm -f "$sock"
	"$bdfilterd" --foreground --nbd-listen "unix:$sock" --control none \
		--device "disk=$wil_origin,filter=tracker" "${args[@]}" --log-level warn 2>>"$work/server.log" &
	server_pid=$!
	export_name=disk
	wait_server
}
wil_run() { # NAME ROUND JOB fio options...
	local sv=$1 round=$2 job=$3
	shift 3
	wil_start "$sv"
	if [ "$job" = steady ]; then
		# every region of (w)'s log dirty; the same writes for (t), so
		# that both start from the same page cache and disk
		run_fio section=wil "round=$round" "server=$sv" job=prefill "cache=$wil_cache" -- \
			"${wil_prefill[@]}" >"$work/line"
	fi
	drop_page_cache
	run_fio section=wil "round=$round" "server=$sv" "job=$job" "cache=$wil_cache" -- "$@" >>"$results"
	stop_server
}

wil_first=(--rw=randwrite --bs=4k --iodepth=32 --size="${wil_mib}M" --number_ios="$wil_ios"
	--randrepeat=1 --randseed="$wil_seed" --norandommap=0)
wil_steady=(--rw=randwrite --bs=4k --iodepth=32 --size="${wil_mib}M" --time_based --runtime="$runtime"
	--ramp_time=1 --randrepeat=1 --randseed="$wil_seed")
# one 4 KiB write at the start of every MiB: every region of the log dirty
wil_prefill=(--rw=write:1020k --bs=4k --iodepth=32 --size="${wil_mib}M")

echo "bench wil: origin $wil_origin: ${wil_mib} MiB of random data on $wil_dev ($wil_fs); page cache" \
	"$([ "$wil_cache" = cold ] && echo "dropped before each job" || echo "NOT dropped (not root)")"
head -c "$((wil_mib << 20))" /dev/urandom >"$wil_origin"
sync

$PY - "$work/wil-method.json" <<PY
import json, sys
json.dump({
    "origin_mib": $wil_mib, "device": "$wil_dev", "fstype": "$wil_fs", "cache": "$wil_cache",
    "rounds": $rounds, "seed": $wil_seed,
    "jobs": {
        "first-touch": "$wil_ios random 4 KiB writes, iodepth 32, a fresh server (every region of the log"
                       " clean), $wil_cache cache, each a distinct block, the same offsets for every server",
        "steady": "random 4 KiB writes, iodepth 32, ${runtime}s (+1s ramp), every region of the log dirty,"
                  " $wil_cache cache",
    },
}, open(sys.argv[1], "w"), indent=1)
PY

for round in $(seq "$rounds"); do
	for sv in $( ((round % 2)) && echo bdf_wil bdf_tracker || echo bdf_tracker bdf_wil); do
		wil_run "$sv" "$round" first-touch "${wil_first[@]}"
	done
done
echo "bench wil: first-touch done ($(($(date +%s) - wil_t0)) s, load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2

# steady: (w) with the log's regions all dirty (a prefill through the same
# server first, not counted), each round the two servers in turn.
for round in $(seq "$rounds"); do
	for sv in $( ((round % 2)) && echo bdf_wil_dirty bdf_tracker || echo bdf_tracker bdf_wil_dirty); do
		wil_run "$sv" "$round" steady "${wil_steady[@]}"
	done
done
echo "bench wil: steady done ($(($(date +%s) - wil_t0)) s, load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
wil_cleanup
