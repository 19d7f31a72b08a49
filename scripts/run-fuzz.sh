#!/bin/sh
# Runs every libFuzzer target in BUILD for SECONDS each; fails on the first crash.
# The corpus lives in a scratch directory seeded from tests/fuzz/corpus/NAME if present.
set -eu
build=$1
seconds=${2:-30}
src=$(cd "$(dirname "$0")/.." && pwd)
fail=0
for t in "$build"/tests/fuzz/fuzz_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	name=$(basename "$t")
	corpus=$(mktemp -d)
	[ -d "$src/tests/fuzz/corpus/$name" ] && cp "$src/tests/fuzz/corpus/$name"/* "$corpus"/ 2>/dev/null || true
	echo "fuzzing $name for ${seconds}s"
	if ! "$t" -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$build/$name-" "$corpus" >"$build/$name.log" 2>&1; then
		echo "$name: FAILED (see $build/$name.log)"
		tail -n 30 "$build/$name.log"
		fail=1
	else
		grep -E '^(stat::number_of_executed_units|cov:)|Done' "$build/$name.log" | tail -2
	fi
	rm -rf "$corpus"
done
exit $fail
