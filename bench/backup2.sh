#!/bin/bash
# Repository version 2 at scale (issue 12's goals), on a device of random data
# served by bdfilterd with the tracker attached, from a snapshot image, page
# cache dropped before every timed step (cold: the origin is read from disk):
#  - full backup into a new version 1 repository ("today's plain full"), into
#    a new version 2 repository (dedup and zstd), and nbdcopy --flush of the
#    same image to a file, in another order each round; BENCH_ROUNDS rounds
#    (default 3), medians and the
#    range of the per-round ratios (goals: v1/nbdcopy >= 0.9, v2/v1 >= 0.8);
#  - a second full of the unchanged device into the version 2 repository: the
#    new bytes it stores against the device (goal < 1%);
#  - restore of the version 2 backup to a file against nbdcopy --flush of the
#    image (goal >= 1.0), cold;
#  - serve: nbdcopy from `bdfilter-backup serve` against nbdcopy from
#    bdfilterd serving the restored file, to null:, cold and warm (goal >= 0.8);
#  - an ext4 image of text files (mkfs.ext4 -d), backed up: stored bytes
#    against the data it holds (goal <= 0.5);
#  - the same full backup into S3 (s3rver from npm on 127.0.0.1) when npm is
#    there: its throughput, and the CPU time of each process.
# Writes BUILD/bench/backup2.json. BENCH_BACKUP_MIB changes the size (4096).
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${BENCH_BACKUP_MIB:-4096}
rounds=${BENCH_ROUNDS:-3}
export PATH="/usr/sbin:/usr/bin:$PATH"
PY=/usr/bin/python3
BK="$build/bdfilter-backup"
work=$(mktemp -d /var/tmp/bdfilter-bench-backup2.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
B() { "$build/bdfilter" --control "$work/control.sock" "$@"; }
kv() { sed -n "s/^$1=//p"; }
ms() { date +%s%3N; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
can_drop=no; [ -w /proc/sys/vm/drop_caches ] && can_drop=yes
wait_sock() { for _ in $(seq 400); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }
snap() {
	local id
	id=$(B snapshot_create -d "$1" | kv id)
	B snapshot_appendstorage -i "$id" -f "$work/diff.img" >/dev/null
	B snapshot_take -i "$id" >/dev/null
	echo "$id"
}
# secs CMD...: run it, print its wall time in seconds
secs() { local t0 t1; t0=$(ms); "$@" >/dev/null; t1=$(ms); echo "$(( t1 - t0 ))" | awk '{ printf "%.3f\n", $1 / 1000 }'; }

echo "bench backup2: a ${size_mib} MiB device of random data, $(nproc) cores, page cache dropped: $can_drop"
head -c "${size_mib}M" /dev/urandom >"$work/disk.img"
truncate -s "$((size_mib * 2))M" "$work/diff.img"

# The ext4 image of text: files of numbered lines of words and numbers, as
# logs are; the words drawn from 5000 with Zipf's law (the frequency of the
# n-th word is 1/n), as words in text are.
text_mib=$(( size_mib / 16 < 128 ? 128 : size_mib / 16 ))
mkdir "$work/text"
$PY - "$work/text" "$text_mib" <<'PY'
import os, random, sys
root, mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(12)
words = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))) for _ in range(5000)]
cum, t = [], 0.0
for i in range(len(words)):
    t += 1.0 / (i + 1)
    cum.append(t)
total, n = 0, 0
while total < mib << 20:
    d = os.path.join(root, "d%03d" % (n // 200))
    os.makedirs(d, exist_ok=True)
    lines = []
    for i in range(rnd.randint(200, 4000)):
        lines.append("%06d %s %d\n" % (i, " ".join(rnd.choices(words, cum_weights=cum, k=rnd.randint(3, 14))), rnd.randint(0, 1 << 20)))
    data = "".join(lines).encode()
    open(os.path.join(d, "f%05d.txt" % n), "wb").write(data)
    total += len(data)
    n += 1
PY
text_bytes=$(du -sb "$work/text" | cut -f1)
truncate -s "$(( text_mib * 2 ))M" "$work/text.img"
mkfs.ext4 -q -F -d "$work/text" "$work/text.img"
rm -rf "$work/text"

"$build/bdfilterd" --foreground --nbd-listen "unix:$work/nbd.sock" --control "$work/control.sock" \
	--device "disk=$work/disk.img,filter=tracker" --device "text=$work/text.img,filter=tracker" \
	--log-level warn 2>"$work/server.log" &
pids="$pids $!"
wait_sock "$work/nbd.sock"; wait_sock "$work/control.sock"
img="nbd+unix:///disk-image?socket=$work/nbd.sock"
id=$(snap disk)
# The new files' dirty pages go to disk before anything is timed, and a
# warm-up round (shown, not counted) comes first: the writeback of a freshly
# made image competing with the first rounds was most of the spread between
# two runs of the backup section (docs/bench.md).
sync

: >"$work/rounds"
for round in $(seq 0 "$rounds"); do
	rm -rf "$work/r1" "$work/r2" "$work/copy.img"
	# Each round in another order: what one leaves the host's disk to do
	# does not fall on the same one every time.
	for job in $(echo v1 v2 cp v1 v2 | cut -d' ' -f$((round % 3 + 1))-$((round % 3 + 3))); do
		cold
		case $job in
		v1) t_v1=$(secs "$BK" full --from "$img" --repo "$work/r1" --repo-version 1 --quiet) ;;
		v2) t_v2=$(secs "$BK" full --from "$img" --repo "$work/r2" --quiet) ;;
		cp) t_cp=$(secs nbdcopy --flush "$img" "$work/copy.img") ;;
		esac
	done
	[ "$round" = 0 ] || echo "$t_v1 $t_v2 $t_cp" >>"$work/rounds"
	echo "  round $round$([ "$round" = 0 ] && echo ' (warm-up)'): full v1 ${t_v1}s, full v2 ${t_v2}s, nbdcopy --flush ${t_cp}s"
done
rm -rf "$work/r1"
# The second full of the unchanged device
cold
"$BK" full --from "$img" --repo "$work/r2" --json --quiet >"$work/second.json"
B snapshot_destroy -i "$id"
"$BK" info --repo "$work/r2" --json >"$work/info.json"

# restore against nbdcopy of the same image (copy.img, from the last round)
rm -f "$work/restored.img"
cold; t_restore=$(secs "$BK" restore --repo "$work/r2" --at 0 --to "$work/restored.img" --quiet)
cmp "$work/restored.img" "$work/copy.img"
t_copy_last=$(tail -n1 "$work/rounds" | cut -d' ' -f3)

# serve against bdfilterd serving the restored file
serve_line=""
if "$BK" serve --help >/dev/null 2>&1; then
	"$BK" serve --repo "$work/r2" --at 0 --listen "unix:$work/serve.sock" >"$work/serve.out" 2>"$work/serve.err" &
	pids="$pids $!"
	wait_sock "$work/serve.sock"
	"$build/bdfilterd" --foreground --nbd-listen "unix:$work/file.sock" --control "$work/control2.sock" \
		--device "restored=$work/restored.img" --log-level warn 2>"$work/server2.log" &
	pids="$pids $!"
	wait_sock "$work/file.sock"
	suri="nbd+unix:///?socket=$work/serve.sock"
	furi="nbd+unix:///restored?socket=$work/file.sock"
	cold; t_serve_cold=$(secs nbdcopy "$suri" null:)
	t_serve_warm=$(secs nbdcopy "$suri" null:)
	cold; t_file_cold=$(secs nbdcopy "$furi" null:)
	t_file_warm=$(secs nbdcopy "$furi" null:)
	serve_line="$t_serve_cold $t_serve_warm $t_file_cold $t_file_warm"
fi

# ext4 of text
id=$(snap text)
cold
"$BK" full --from "nbd+unix:///text-image?socket=$work/nbd.sock" --repo "$work/rt" --json --quiet >"$work/text.json"
B snapshot_destroy -i "$id"

# S3 (s3rver on loopback), when npm is there
s3_line=""
if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
	cache="$build/s3rver-cache"
	if [ ! -x "$cache/node_modules/s3rver/bin/s3rver.js" ]; then
		mkdir -p "$cache" && cp "$src/tests/s3/package.json" "$src/tests/s3/package-lock.json" "$cache/" &&
			(cd "$cache" && npm ci --no-audit --no-fund --silent >/dev/null 2>&1) || true
	fi
	if [ -f "$cache/node_modules/s3rver/bin/s3rver.js" ]; then
		port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		mkdir "$work/s3"
		node --openssl-legacy-provider "$cache/node_modules/s3rver/bin/s3rver.js" -d "$work/s3" -a 127.0.0.1 \
			-p "$port" --silent --no-vhost-buckets --configure-bucket bench >"$work/s3.log" 2>&1 &
		s3pid=$!
		pids="$pids $s3pid"
		for _ in $(seq 400); do $PY -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break; sleep 0.05; done
		export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1 \
			AWS_ENDPOINT_URL="http://127.0.0.1:$port" NO_PROXY=127.0.0.1
		id=$(snap disk)
		s3_before=$(awk '{ print $14 + $15 }' "/proc/$s3pid/stat")
		cold
		/usr/bin/time -f "%e %U %S" -o "$work/s3.time" "$BK" full --from "$img" --repo "s3://bench/r" --json \
			--quiet >"$work/s3.json"
		s3_after=$(awk '{ print $14 + $15 }' "/proc/$s3pid/stat")
		B snapshot_destroy -i "$id"
		s3_line="$(cat "$work/s3.time") $(( s3_after - s3_before )) $(getconf CLK_TCK)"
	fi
fi

mkdir -p "$build/bench"
$PY - "$work/rounds" "$work/second.json" "$work/info.json" "$work/text.json" "$text_bytes" "$size_mib" \
	"$t_restore" "$t_copy_last" "$serve_line" "$s3_line" "$build/bench/backup2.json" <<'PY'
import json, statistics, sys
rounds = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
second, info, text = (json.load(open(p)) for p in sys.argv[2:5])
text_bytes, mib = int(sys.argv[5]), int(sys.argv[6])
t_restore, t_copy = float(sys.argv[7]), float(sys.argv[8])
serve = list(map(float, sys.argv[9].split())) if sys.argv[9] else None
s3 = sys.argv[10].split() if sys.argv[10] else None
med = lambda i: statistics.median(r[i] for r in rounds)
rng = lambda f: "%.2f-%.2f" % (min(f(r) for r in rounds), max(f(r) for r in rounds))
v1, v2, cp = med(0), med(1), med(2)
out = {"size_mib": mib, "rounds": rounds}
print("  full v1 %6.0f MiB/s, full v2 %6.0f MiB/s, nbdcopy --flush %6.0f MiB/s (medians of %d, cold)" %
      (mib / v1, mib / v2, mib / cp, len(rounds)))
print("  full v1 / nbdcopy  %.2f  (rounds %s; goal >= 0.9)" % (cp / v1, rng(lambda r: r[2] / r[0])))
print("  full v2 / full v1  %.2f  (rounds %s; goal >= 0.8)" % (v1 / v2, rng(lambda r: r[0] / r[1])))
out.update(v1_over_nbdcopy=cp / v1, v2_over_v1=v1 / v2)
# what it adds: new chunks (none) and its block map (32 bytes a block)
new = second["new_bytes"] + (mib << 20) // 65536 * 32
print("  second full of the unchanged device: %d new bytes with its map, %.4f%% of the device (goal < 1%%), %.2f s" %
      (new, 100 * new / (mib << 20), second["seconds"]))
out.update(second_new_fraction=new / (mib << 20), second_seconds=second["seconds"])
print("  restore v2 %.2f s, nbdcopy --flush %.2f s: restore/nbdcopy %.2f (goal >= 1.0)" %
      (t_restore, t_copy, t_copy / t_restore))
out.update(restore_over_nbdcopy=t_copy / t_restore)
if serve:
    sc, sw, fc, fw = serve
    print("  serve: cold %.0f MiB/s (bdfilterd on the restored file %.0f): %.2f; warm %.0f (%.0f): %.2f (goal >= 0.8)" %
          (mib / sc, mib / fc, fc / sc, mib / sw, mib / fw, fw / sw))
    out.update(serve_cold=fc / sc, serve_warm=fw / sw)
else:
    print("  serve: not built")
stored = text["bytes_stored"]
print("  ext4 of text: %d bytes of files, %d stored: %.2f (goal <= 0.5)" % (text_bytes, stored, stored / text_bytes))
out.update(text_stored_over_files=stored / text_bytes)
if s3:
    wall, user, sys_, s3_ticks, hz = float(s3[0]), float(s3[1]), float(s3[2]), int(s3[3]), int(s3[4])
    print("  S3 (s3rver on loopback): full v2 %.0f MiB/s; CPU: bdfilter-backup %.1f s, s3rver %.1f s of %.1f s" %
          (mib / wall, user + sys_, s3_ticks / hz, wall))
    out.update(s3_mib_s=mib / wall, s3_client_cpu=user + sys_, s3_server_cpu=s3_ticks / hz, s3_wall=wall)
else:
    print("  S3: npm or s3rver not available")
json.dump(out, open(sys.argv[11], "w"), indent=1)
print("  results: " + sys.argv[11])
PY
