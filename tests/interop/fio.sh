#!/bin/bash
# fio's nbd engine: random reads and writes at depth 32 with verification.
. "$BDF_SRCDIR/tests/functional/lib.sh"
need fio
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio has no nbd engine"

mkimage "$T/disk.img" 64
bdf_start --device "disk=$T/disk.img,filter=passthrough"

fio --name=verify --ioengine=nbd --uri="$(uri disk)" --rw=randrw --bs=4k --bsrange=512-64k \
	--iodepth=32 --size=64M --io_size=128M --verify=crc32c --do_verify=1 --verify_fatal=1 \
	--output-format=json >"$T/fio.json" 2>"$T/fio.err" || { cat "$T/fio.err"; fail "fio verify job"; }
$PY - "$T/fio.json" <<'PY' || fail "fio reported errors"
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])
job = j["jobs"][0]
assert job["error"] == 0, job["error"]
assert job["read"]["io_bytes"] > 0 and job["write"]["io_bytes"] > 0
print("# fio: read %d KiB, wrote %d KiB, no errors" % (job["read"]["io_kbytes"], job["write"]["io_kbytes"]))
PY
bdf_stop
