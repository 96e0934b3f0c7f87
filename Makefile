# A thin wrapper over CMake presets. The two commands a newcomer needs:
#   make run    install what is missing, build, start `iotd all` (ports 8001 and 8002)
#   make test   install what is missing, build, run every test
# Others: build, bench, fuzz, fmt, lint, asan, clean.

PRESET ?= release
BUILD := build/$(PRESET)
IOTD := $(BUILD)/src/app/iotd
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 20

.PHONY: deps build run test unit e2e asan fuzz fuzz-long bench fmt lint clean package

deps:
	@scripts/install-deps.sh

build: deps
	@[ -f $(BUILD)/build.ninja ] || cmake --preset $(PRESET) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(IOTD) all

# Every test: unit + conformance (ctest), end-to-end against the real binary (pytest),
# the sanitizer build of the unit tests and a bounded fuzz run.
test: build
	scripts/test.sh

unit: build
	FERRETDB=$$(scripts/ferretdb.sh build) KAFKA_LIBS=$$(scripts/kafka.sh build) ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

e2e: build
	FERRETDB=$$(scripts/ferretdb.sh build) KAFKA_LIBS=$$(scripts/kafka.sh build) IOTD=$(abspath $(IOTD)) python3 -m pytest -q tests/e2e

asan: deps
	@[ -f build/asan/build.ninja ] || cmake --preset asan >/dev/null
	cmake --build build/asan -j $(JOBS)
	ctest --test-dir build/asan --output-on-failure -j $(JOBS) -L unit

fuzz: deps
	@[ -f build/fuzz/build.ninja ] || cmake --preset fuzz >/dev/null
	cmake --build build/fuzz -j $(JOBS) --target reading_fuzz mqtt_packet_fuzz
	scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-long:
	$(MAKE) fuzz FUZZ_SECONDS=600

bench: build
	@scripts/install-deps.sh --bench
	scripts/bench.sh

# The Debian package of the embedded deployment (cmake/Package.cmake, packaging/): builds iotd,
# runs CPack and prints the path of the .deb (in $(BUILD)/package).
package: deps
	@[ -f $(BUILD)/build.ninja ] || cmake --preset $(PRESET) >/dev/null
	cmake --build $(BUILD) -j $(JOBS) --target iotd
	@cd $(BUILD) && cpack --config CPackConfig.cmake >package.log 2>&1 || { cat package.log; exit 1; }
	@sed -n 's/^CPack: - package: \(.*\) generated\.$$/\1/p' $(BUILD)/package.log

fmt:
	find src tests bench -name '*.cc' -o -name '*.h' | xargs clang-format -i

lint: build
	find src -name '*.cc' | xargs clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf build
