#!/bin/bash
# fio's nbd engine: random reads and writes at depth 32 with crc32c verification,
# through a pass-through filter; fio must report no errors.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need fio
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio has no nbd engine"

mkimage "$T/disk.img" 64
bdf_start --device "disk=$T/disk.img,filter=passthrough"

# fio writes its verify state file into the current directory: keep it in $T
cd "$T" || exit 1
run_fio() {
	name=$1; shift
	fio --name="$name" --ioengine=nbd --uri="$(uri disk)" --iodepth=32 --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --verify_state_save=0 --output-format=json "$@" >"$T/$name.json" 2>"$T/$name.err" ||
		fail "fio $name job: $(cat "$T/$name.err")"
	$PY - "$T/$name.json" "$name" <<'PY' || fail "fio $name reported errors: $(cat "$T/$name.err")"
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])
for job in j["jobs"]:
    assert job["error"] == 0, job["error"]
    assert job["read"]["io_bytes"] > 0 and job["write"]["io_bytes"] > 0, "no I/O"
    print("# fio %s: read %d KiB, wrote %d KiB, no errors" % (sys.argv[2], job["read"]["io_kbytes"], job["write"]["io_kbytes"]))
PY
}
# mixed block sizes from 512 B to 64 KiB, random read/write, verified as it goes
run_fio randrw --rw=randrw --bsrange=512-64k --size=64M --io_size=128M
# a few seconds of 4 KiB random writes, verified at the end
run_fio timed --rw=randwrite --bs=4k --size=32M --offset=32M --runtime=3 --time_based=0 --io_size=256M
# four jobs, one connection each, on disjoint 16 MiB regions at once
run_fio multi --rw=randrw --bs=4k --size=16M --offset_increment=16M --numjobs=4 --io_size=32M
bdf_stop
