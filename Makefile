# The README's commands. meson does the building; this file installs what is
# missing from Debian first and gives the targets short names.
BUILD ?= build
ASAN_BUILD ?= build-asan
MESON_OPTS ?=

.PHONY: all check check-asan bench demo deps clean fuzz fuzz-long soak

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD)/build.ninja:
	@sh scripts/install-deps.sh build
	meson setup $(BUILD) $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	@sh scripts/install-deps.sh build
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fno-sanitize-recover=all $(MESON_OPTS)

deps:
	@sh scripts/install-deps.sh build test bench

check: all
	@sh scripts/install-deps.sh test
	@sh scripts/run-tests.sh $(BUILD)

check-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	@sh scripts/install-deps.sh test
	@sh scripts/run-tests.sh $(ASAN_BUILD)

bench: all
	@sh scripts/install-deps.sh bench
	@bash bench/run.sh $(BUILD)

demo: all
	@sh scripts/install-deps.sh demo
	@bash scripts/demo.sh $(BUILD)

# A long stress test, not in CI (docs/testing.md, "Soak"); needs root.
SOAK_MINUTES ?= 10
SOAK_DIR ?=
soak: all
	@sh scripts/install-deps.sh test
	SOAK_MINUTES='$(SOAK_MINUTES)' SOAK_DIR='$(SOAK_DIR)' /usr/bin/python3 tests/soak/soak.py $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

FUZZ_BUILD ?= build-fuzz
# FUZZ_SECONDS (each fuzzer's run) from the command line or the environment,
# else the target's own: 30 for fuzz, 600 for fuzz-long.

$(FUZZ_BUILD)/build.ninja:
	@sh scripts/install-deps.sh build fuzz
	CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true -Dtests=disabled \
		-Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fno-sanitize-recover=all

# Each fuzzer runs FUZZ_SECONDS on a scratch copy of its seeds in
# tests/fuzz/corpus/ (what a run finds is not kept; a crash is, in FUZZ_BUILD).
fuzz: $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)
	@sh scripts/run-fuzz.sh $(FUZZ_BUILD) $(or $(FUZZ_SECONDS),30)

# The same, 10 minutes each by default (50 in all): before a release, or
# after a change to a parser.
fuzz-long: $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)
	@sh scripts/run-fuzz.sh $(FUZZ_BUILD) $(or $(FUZZ_SECONDS),600)
