#!/usr/bin/env bash
# test.sh: every test suite, in order, with one summary line at the end. Called by `make test`.
#   0. the FerretDB server the MongoDB tests run (built once with Go, then cached)
#   1. unit + store conformance + integration (ctest, release build)
#   2. end-to-end against the real binary (pytest), on both stores
#   3. unit tests again under AddressSanitizer + UBSan
#   4. a bounded libFuzzer run of the reading parser
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
declare -A result
order=()

step() {
  local name=$1
  shift
  order+=("$name")
  echo "=== $name: $*"
  local start=$SECONDS
  if "$@"; then result[$name]="passed"; else result[$name]="FAILED"; fi
  echo "=== $name: ${result[$name]} in $((SECONDS - start)) s"
}

# A failed build fails this step loudly; the MongoDB tests then fail too, naming the fix.
ferretdb() {
  FERRETDB=$(scripts/ferretdb.sh build) || return 1
  export FERRETDB
  echo "FERRETDB=$FERRETDB"
}
step ferretdb ferretdb
step unit ctest --test-dir build/release --output-on-failure -j "$JOBS" --timeout 300
step e2e env IOTD="$PWD/build/release/src/app/iotd" python3 -m pytest -q -p no:cacheprovider tests/e2e
asan() {
  [ -f build/asan/build.ninja ] || cmake --preset asan >/dev/null || return 1
  cmake --build build/asan -j "$JOBS" || return 1
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/asan --output-on-failure -j "$JOBS" -L unit --timeout 600
}
step asan asan
fuzz() {
  [ -f build/fuzz/build.ninja ] || cmake --preset fuzz >/dev/null || return 1
  # Only the fuzz targets: clang 14 cannot build the coroutine-based load generator.
  cmake --build build/fuzz -j "$JOBS" --target reading_fuzz || return 1
  scripts/fuzz.sh "$FUZZ_SECONDS"
}
step fuzz fuzz

passed=0
failed=0
for name in "${order[@]}"; do
  echo "$name: ${result[$name]}"
  if [ "${result[$name]}" = passed ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
