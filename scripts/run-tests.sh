#!/bin/sh
# Runs every meson test suite in BUILD and ends with one line:
#   N passed, N failed, N skipped
# Exit status: 0 when nothing failed.
set -u
build=${1:-build}

meson test -C "$build" --print-errorlogs --num-processes 2 ${MESON_TEST_ARGS:-}
status=$?

log="$build/meson-logs/testlog.json"
if [ ! -f "$log" ]; then
	echo "0 passed, 1 failed"
	exit 1
fi
# One JSON object per test; count by result.
summary=$(/usr/bin/python3 - "$log" <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line).get("result", "")
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif r == "SKIP":
        skipped += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
PY
)
pystatus=$?
echo "$summary"
[ $status -eq 0 ] && [ $pystatus -eq 0 ]
