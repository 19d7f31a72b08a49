# shellcheck shell=bash disable=SC2154,SC2034
# (SC2154, SC2034: the variables come from, and go to, bench/run.sh)
# The mirror's section of make bench (section "mirror", sourced by
# bench/run.sh; alone: `BENCH_ONLY=mirror make bench`), on a BENCH_MIRROR_MIB
# (1024) MiB origin of random data on disk, the target a fresh sparse file
# beside it, page cache dropped before each run, BENCH_ROUNDS rounds:
#  - copy: how fast the resync moves the device (mirror_start with no rate
#    limit until mirror_status says synced, nothing else writing), against
#    nbdcopy of the same export to a fresh file;
#  - writes: random 4 KiB writes at iodepth 32 for BENCH_RUNTIME seconds while
#    a resync runs (at BENCH_MIRROR_RATE, 64M per second by default, so that it
#    lasts the whole run) to a preallocated target (fallocate: its blocks
#    allocated, as a logical volume's or a disk's are), against the same
#    writes with no mirror.
# Environment: BENCH_DIR (/var/tmp), BENCH_MIRROR_MIB (1024), BENCH_MIRROR_RATE (64M).

mir_mib=${BENCH_MIRROR_MIB:-1024}
mir_rate=${BENCH_MIRROR_RATE:-64M}
mir_dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bdfilter-bench-mirror.XXXXXX")
mir_origin="$mir_dir/origin.img"
mir_target="$mir_dir/target.img"
mir_ctl="$work/mirror-control.sock"
mir_t0=$(date +%s)
mir_cache=$page_cache

mirror_cleanup() {
	[ -n "$mir_dir" ] && rm -rf "$mir_dir"
	mir_dir=
}
mir_start() { # [preallocate]: the target's blocks allocated, as an LV or a disk's are
	rm -f "$sock" "$mir_ctl" "$mir_target"
	if [ "${1:-}" = preallocate ]; then
		fallocate -l "${mir_mib}M" "$mir_target"
	else
		truncate -s "${mir_mib}M" "$mir_target"
	fi
	"$bdfilterd" --foreground --nbd-listen "unix:$sock" --control "$mir_ctl" \
		--device "disk=$mir_origin" --log-level warn 2>>"$work/server.log" &
	server_pid=$!
	export_name=disk
	wait_server
	for _ in $(seq 200); do [ -S "$mir_ctl" ] && break; sleep 0.05; done
}
mir_cli() { "$build/bdfilter" --control "$mir_ctl" "$@"; }
mir_synced() { # wait for the resync to end; fail if it failed
	local st
	for _ in $(seq 2400); do
		st=$(mir_cli mirror_status -d disk | sed -n 's/^state=//p')
		[ "$st" = synced ] && return 0
		[ "$st" = failed ] && { echo "bench mirror: the mirror failed" >&2; return 1; }
		sleep 0.05 # each poll starts a process: not too often, on two cores
	done
	echo "bench mirror: no sync after 120 s" >&2
	return 1
}
mir_copy_line() { # SERVER ROUND SECONDS
	$PY -c 'import json, sys
mib, s = int(sys.argv[3]), float(sys.argv[4])
print(json.dumps({"section": "mirror", "job": "copy", "server": sys.argv[1], "round": int(sys.argv[2]),
                  "mib_s": mib / s, "iops": mib / s, "seconds": s, "clat_p99_ms": 0, "error": 0,
                  "cache": sys.argv[5]}))' "$1" "$2" "$mir_mib" "$3" "$mir_cache" >>"$results"
}
ms_now() { date +%s%3N; }

echo "bench mirror: origin $mir_origin: ${mir_mib} MiB of random data; target a fresh sparse file beside it;" \
	"page cache $([ "$mir_cache" = cold ] && echo dropped || echo "NOT dropped (not root)") before each run"
head -c "$((mir_mib << 20))" /dev/urandom >"$mir_origin"
sync
$PY - "$work/mirror-method.json" <<PY
import json, sys
json.dump({"origin_mib": $mir_mib, "cache": "$mir_cache", "rounds": $rounds, "jobs": {
    "copy": "the whole device: mirror_start with no rate limit until synced, or nbdcopy of the export"
            " to a fresh file; MiB/s",
    "writes": "random 4 KiB writes, iodepth 32, ${runtime}s (+1s ramp), during a resync at $mir_rate/s to a"
              " preallocated target, or with no mirror",
}}, open(sys.argv[1], "w"), indent=1)
PY

for round in $(seq "$rounds"); do
	for sv in $( ((round % 2)) && echo mirror_resync nbdcopy || echo nbdcopy mirror_resync); do
		mir_start
		drop_page_cache
		t=$(ms_now)
		if [ "$sv" = nbdcopy ]; then
			nbdcopy "nbd+unix:///disk?socket=$sock" "$mir_dir/copy.img"
			sync "$mir_dir/copy.img"
			rm -f "$mir_dir/copy.img"
		else
			mir_cli mirror_start -d disk -f "$mir_target" >/dev/null
			mir_synced
			sync "$mir_target"
		fi
		mir_copy_line "$sv" "$round" "$(( $(ms_now) - t ))e-3"
		stop_server
	done
	for sv in $( ((round % 2)) && echo bdf_mirror bdf_nomirror || echo bdf_nomirror bdf_mirror); do
		mir_start preallocate
		drop_page_cache
		if [ "$sv" = bdf_mirror ]; then
			mir_cli mirror_start -d disk -f "$mir_target" --rate "$mir_rate" >/dev/null
		fi
		run_fio section=mirror "round=$round" "server=$sv" job=writes "cache=$mir_cache" -- \
			--rw=randwrite --bs=4k --iodepth=32 --size="${mir_mib}M" --time_based --runtime="$runtime" \
			--ramp_time=1 >>"$results"
		if [ "$sv" = bdf_mirror ] &&
			[ "$(mir_cli mirror_status -d disk | sed -n 's/^state=//p')" != syncing ]; then
			echo "bench mirror: the resync ended before the writes did: set BENCH_MIRROR_RATE lower" >&2
		fi
		stop_server
	done
done
echo "bench mirror: done ($(($(date +%s) - mir_t0)) s, load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
mirror_cleanup
