# Thin driver over CMake. `make` builds build/portico; `make test` runs every test;
# `make asan` builds and tests under ASan+UBSan in build-asan/.
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
WERROR ?= OFF
SANITIZED ?=
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all build deps check-only fuzzers fuzz fuzz-check test unit integration browser demo-check asan check bench-smoke deploy-check clean demo
all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DPTC_WERROR=$(WERROR) $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

unit: build
	cd $(BUILD) && ctest --output-on-failure

integration: build
	PORTICO_BIN=$(abspath $(BUILD))/portico PTC_SANITIZED=$(SANITIZED) /usr/bin/python3 -m pytest -q tests/integration $(PYTEST_ARGS)

# Real-browser matrix: Chromium (Debian) driving the npm gRPC-Web clients against the gateway.
browser: build
	PORTICO_BIN=$(abspath $(BUILD))/portico node tests/browser/run.mjs

# The demo (scripts/demo) in Chromium: page loads, each button works, Ctrl-C stops everything.
demo-check: build
	PORTICO_BIN=$(abspath $(BUILD))/portico node demo/check.mjs

test: unit integration browser demo-check

asan:
	$(MAKE) test BUILD=build-asan BUILD_TYPE=Debug CMAKE_FLAGS="-DPTC_ASAN=ON -DPTC_UBSAN=ON -DPTC_FAULT_INJECTION=ON" SANITIZED=1

# The full suite, as CI runs it: everything, the Dockerfile's steps, then everything again under
# ASan+UBSan, then a seconds-long smoke of the benchmark harness (no timing judged) so bench/ does not rot.
check: deps
	$(MAKE) check-only

check-only: test deploy-check asan fuzz-check bench-smoke

# libFuzzer targets (tests/fuzz/; clang with ASan+UBSan) in build-fuzz/fuzz/<name>.
FUZZ_BUILD ?= build-fuzz
fuzzers:
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPTC_FUZZ=ON -DBUILD_TESTING=OFF -DPTC_WERROR=$(WERROR)
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

# Every corpus replayed and a few seconds of fresh fuzzing per target (CI).
fuzz-check: fuzzers
	FUZZ_BUILD=$(FUZZ_BUILD) scripts/fuzz check

# A long run of one target: make fuzz TARGET=frame SECONDS=3600
fuzz: fuzzers
	FUZZ_BUILD=$(FUZZ_BUILD) scripts/fuzz run $(TARGET) $(or $(SECONDS),3600)

# deploy/Dockerfile's steps run as a plain script (no Docker here): the build stage's packages cover
# what the build uses, the runtime image's packages are exactly the libraries the binary links, and the
# image's entry point starts, answers its HEALTHCHECK and drains on SIGTERM (reuses $(BUILD)'s binary).
deploy-check: build
	deploy/docker-build-steps --build-dir $(BUILD)

# Every build and test dependency (apt, npm): idempotent, and quick when everything is there.
deps:
	scripts/install-deps

bench-smoke:
	bench/run --smoke

demo: deps
	$(MAKE) build
	DEMO_SKIP_DEPS=1 scripts/demo

clean:
	rm -rf build build-asan
