#!/usr/bin/env bash
# test.sh: every test suite, in order, with one summary line at the end. Called by `make test`.
#   0. the FerretDB server the MongoDB tests run (built once with Go, then cached), and the Kafka
#      broker's jars the Kafka tests run (fetched once with Maven, then cached)
#   1. unit + store conformance + integration (ctest, release build)
#   2. end-to-end against the real binary (pytest), on both stores
#   2b. the deployment files (tests/deploy): compose files, Kubernetes manifests, Dockerfile,
#      the .deb and its systemd unit, shell scripts, Prometheus rules
#   3. unit tests again under AddressSanitizer + UBSan
#   4. a bounded libFuzzer run of the reading parser
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
declare -A result
order=()

LOGS=build/test-logs
mkdir -p "$LOGS"

# Runs one suite, its output both on the terminal and in $LOGS/<name>.log, so the summary at the
# end can name what failed (CI shows only the tail of the output).
step() {
  local name=$1
  shift
  order+=("$name")
  echo "=== $name: $*"
  local start=$SECONDS
  if "$@" 2>&1 | tee "$LOGS/$name.log"; then result[$name]="passed"; else result[$name]="FAILED"; fi
  echo "=== $name: ${result[$name]} in $((SECONDS - start)) s"
}

# A failed build fails this step loudly; the MongoDB tests then fail too, naming the fix.
# (step runs it in a subshell, so the path comes back through a file.)
ferretdb() {
  scripts/ferretdb.sh build >"$LOGS/ferretdb.path" || return 1
  echo "FERRETDB=$(cat "$LOGS/ferretdb.path")"
}
step ferretdb ferretdb
FERRETDB=$(cat "$LOGS/ferretdb.path" 2>/dev/null)
export FERRETDB
# Likewise the Kafka broker's jars (fetched once from Maven Central); the Kafka tests fail without.
kafka() {
  scripts/kafka.sh build >"$LOGS/kafka.path" || return 1
  echo "KAFKA_LIBS=$(cat "$LOGS/kafka.path")"
}
step kafka kafka
KAFKA_LIBS=$(cat "$LOGS/kafka.path" 2>/dev/null)
export KAFKA_LIBS
step unit ctest --test-dir build/release --output-on-failure -j "$JOBS" --timeout 300
step e2e env IOTD="$PWD/build/release/src/app/iotd" python3 -m pytest -q -p no:cacheprovider tests/e2e
deploy() {
  local rc=0 mod
  IOTD="$PWD/build/release/src/app/iotd" python3 -m pytest -q -p no:cacheprovider tests/deploy || rc=1
  # Kubernetes' and BuildKit's own Go packages check the manifests and the Dockerfile.
  for mod in tests/deploy/*/go.mod; do
    echo "--- go test in ${mod%/go.mod}"
    (cd "${mod%/go.mod}" && IOTD_BIN="$PWD/../../../build/release/src/app/iotd" GOTOOLCHAIN=local go test -count=1 ./...) || rc=1
  done
  return "$rc"
}
step deploy deploy
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
  cmake --build build/fuzz -j "$JOBS" --target reading_fuzz mqtt_packet_fuzz || return 1
  scripts/fuzz.sh "$FUZZ_SECONDS"
}
step fuzz fuzz

passed=0
failed=0
for name in "${order[@]}"; do
  echo "$name: ${result[$name]}"
  if [ "${result[$name]}" != passed ]; then
    # pytest's "FAILED tests/..." lines, ctest's "(Failed)" lines, a sanitizer's first report.
    grep -E '^(FAILED|ERROR) |^(--- FAIL|FAIL\s)|\((Failed|Timeout|SEGFAULT|Subprocess aborted)\)|^(SUMMARY|==[0-9]+==ERROR)' \
      "$LOGS/$name.log" | head -n 12 | sed 's/^/    /'
  fi
  if [ "${result[$name]}" = passed ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
