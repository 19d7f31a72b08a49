#!/bin/bash
# make bench: bdfilterd against nbdkit's file plugin and qemu-nbd, in one run, on
# the same file, with fio's nbd engine. Prints MiB/s and IOPS per server and job,
# and the ratios bdfilterd/nbdkit and bdfilterd/qemu-nbd; writes the figures as
# JSON to BUILD/bench/results.json. Then bench/backup.sh: the backup client
# (full and incremental) on a 4 GiB device.
#
# The machine has 2 cores: fio and the server under test share them, so these are
# figures for "client and server on one small box", the same for every server.
#
# Environment: BENCH_RUNTIME (seconds per job, default 5), BENCH_ROUNDS (default 3),
# BENCH_SIZE_MIB (file size, default 1024), BDF_ARGS (extra bdfilterd arguments).
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
bdfilterd="$build/bdfilterd"
runtime=${BENCH_RUNTIME:-5}
size_mib=${BENCH_SIZE_MIB:-1024}
out_dir="$build/bench"
mkdir -p "$out_dir"
export PATH="/usr/sbin:/usr/bin:$PATH"
PY=/usr/bin/python3

work=$(mktemp -d /tmp/bdfilter-bench.XXXXXX)
server_pid=
cleanup() {
	stop_server
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

run_job() { # server job rw bs depth -> JSON line
	local server=$1 job=$2 rw=$3 bs=$4 depth=$5
	fio --name="$job" --ioengine=nbd --uri="nbd+unix:///$export_name?socket=$sock" \
		--rw="$rw" --bs="$bs" --iodepth="$depth" --size="${size_mib}M" \
		--time_based --runtime="$runtime" --ramp_time=1 --output-format=json \
		>"$work/fio.json" 2>"$work/fio.err" || { cat "$work/fio.err" >&2; return 1; }
	$PY - "$work/fio.json" "$server" "$job" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
print(json.dumps({"server": sys.argv[2], "job": sys.argv[3],
                  "mib_s": d["bw_bytes"] / 1048576, "iops": d["iops"], "error": j["error"]}))
PY
}

echo "bench: ${size_mib} MiB file, ${runtime}s per job and round, fio $(fio --version), $(nproc) cores"
head -c "$((size_mib << 20))" /dev/urandom >"$img"

servers=(bdfilterd nbdkit qemu_nbd)
[ -x "$bdfilterd" ] || { echo "bench: $bdfilterd is missing; build it first" >&2; exit 1; }
command -v nbdkit >/dev/null || { echo "bench: nbdkit is not installed" >&2; exit 1; }
command -v qemu-nbd >/dev/null || { echo "bench: qemu-nbd is not installed" >&2; exit 1; }
command -v qemu-storage-daemon >/dev/null || { echo "bench: qemu-storage-daemon is not installed" >&2; exit 1; }

# Servers take turns on every job, ROUNDS times, and the median counts: a
# shared 2-core VM drifts by more than the differences being measured.
rounds=${BENCH_ROUNDS:-3}
results="$work/results.jsonl"
: >"$results"
cat "$img" >/dev/null # the same warm page cache for every server
for j in "${jobs[@]}"; do
	for round in $(seq "$rounds"); do
		for server in "${servers[@]}"; do
			"start_$server"
			wait_server
			# shellcheck disable=SC2086
			run_job "$server" $j >>"$results"
			stop_server
		done
	done
	echo "bench: ${j%% *} done" >&2
done

# Pairs: the same job on two set-ups, taking turns, ROUNDS times.
pairs=(
	"tracker:randwrite randwrite 4k 32:bdfilterd_tracker:bdfilterd"
	"tracker:seqwrite write 1M 16:bdfilterd_tracker:bdfilterd"
	"snapshot:randwrite randwrite 4k 32:bdfilterd_snapshot:qsd_cbw"
	"image:randread randread 4k 32:bdfilterd_image:bdfilterd_snapshot"
	"image:seqread read 1M 16:bdfilterd_image:bdfilterd_snapshot"
)
pair_results="$work/pairs.jsonl"
: >"$pair_results"
for p in "${pairs[@]}"; do
	IFS=: read -r label job a b <<<"$p"
	for round in $(seq "$rounds"); do
		for server in "$a" "$b"; do
			"start_$server"
			wait_server
			# shellcheck disable=SC2086
			run_job "$server" $job | sed "s/^{/{\"pair\": \"$label\", /" >>"$pair_results"
			stop_server
		done
	done
	echo "bench: $label ${job%% *} done" >&2
done

$PY - "$results" "$out_dir/results.json" "$pair_results" <<'PY'
import json, sys
import statistics
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert all(r["error"] == 0 for r in runs), "fio reported an error"
by = {}
rows = []
for key in dict.fromkeys((r["server"], r["job"]) for r in runs):
    mine = [r for r in runs if (r["server"], r["job"]) == key]
    med = dict(mine[0])
    med["iops"] = statistics.median(r["iops"] for r in mine)
    med["mib_s"] = statistics.median(r["mib_s"] for r in mine)
    med["runs_iops"] = [round(r["iops"]) for r in mine]
    by[key] = med
    rows.append(med)
jobs = []
for r in rows:
    if r["job"] not in jobs:
        jobs.append(r["job"])
names = {"bdfilterd": "bdfilterd", "nbdkit": "nbdkit", "qemu_nbd": "qemu-nbd"}
print()
print("%-10s | %-19s | %-19s | %-19s | %8s | %8s" % (
    "job", "bdfilterd", "nbdkit", "qemu-nbd", "/nbdkit", "/qemu-nbd"))
print("-" * 98)
summary = []
for job in jobs:
    cells = []
    for s in ("bdfilterd", "nbdkit", "qemu_nbd"):
        r = by[(s, job)]
        cells.append("%7.0f MiB/s %5.0fk" % (r["mib_s"], r["iops"] / 1000))
    b = by[("bdfilterd", job)]["iops"]
    rk = b / by[("nbdkit", job)]["iops"]
    rq = b / by[("qemu_nbd", job)]["iops"]
    summary.append({"job": job, "ratio_nbdkit": rk, "ratio_qemu_nbd": rq})
    print("%-10s | %s | %s | %s | %8.2f | %8.2f" % (job, cells[0], cells[1], cells[2], rk, rq))
print()
print("medians of %d rounds; ratios are bdfilterd IOPS / other IOPS (same block size)" % len(by[rows[0]["server"], rows[0]["job"]]["runs_iops"]))

# the pairs
pruns = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
assert all(r["error"] == 0 for r in pruns), "fio reported an error"
pairs = []
for key in dict.fromkeys((r["pair"], r["job"]) for r in pruns):
    sides = list(dict.fromkeys(r["server"] for r in pruns if (r["pair"], r["job"]) == key))
    med = {sv: statistics.median(r["iops"] for r in pruns if (r["pair"], r["job"], r["server"]) == key + (sv,))
           for sv in sides}
    mib = {sv: statistics.median(r["mib_s"] for r in pruns if (r["pair"], r["job"], r["server"]) == key + (sv,))
           for sv in sides}
    pairs.append({"pair": key[0], "job": key[1], "a": sides[0], "b": sides[1],
                  "iops_a": med[sides[0]], "iops_b": med[sides[1]],
                  "mib_a": mib[sides[0]], "mib_b": mib[sides[1]], "ratio": med[sides[0]] / med[sides[1]]})
print()
print("%-9s %-10s | %-20s %-18s | %-20s %-18s | %6s" % ("pair", "job", "a", "", "b", "", "a/b"))
print("-" * 112)
for p in pairs:
    print("%-9s %-10s | %-20s %7.0f MiB/s %4.0fk | %-20s %7.0f MiB/s %4.0fk | %6.2f" % (
        p["pair"], p["job"], p["a"], p["mib_a"], p["iops_a"] / 1000, p["b"], p["mib_b"], p["iops_b"] / 1000,
        p["ratio"]))
print()
print("tracker: tracker attached vs no filter (goal >= 0.97); snapshot: random writes while a snapshot")
print("is held vs qemu-storage-daemon copy-before-write (goal >= 2); image: image reads vs origin reads")
json.dump({"results": rows, "ratios": summary, "pairs": pairs}, open(sys.argv[2], "w"), indent=1)
print("results: " + sys.argv[2])
PY

# The backup client on a 4 GiB device (issue 4): full against nbdcopy, and an
# incremental of 1% of the blocks. Its own script, its own files.
echo
bash "$(dirname "$0")/backup.sh" "$build"
