#!/usr/bin/env bash
# bench.sh: the micro-benchmarks (Google Benchmark) and the system benchmark
# (bench/system_bench.py). Prints figures; asserts nothing about timing.
#   BENCH_RUNS=3 BENCH_READINGS=10000000 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/release/bench
for b in codec_bench bus_bench; do
  echo "=== $b"
  "$B/$b" --benchmark_min_time=0.5 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
done
echo "=== store_bench"
IOT_STORE_BENCH_READINGS=${IOT_STORE_BENCH_READINGS:-1000000} "$B/store_bench" \
  --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
echo "=== system"
python3 bench/system_bench.py --iotd build/release/src/app/iotd --runs "${BENCH_RUNS:-3}" \
  --readings "${BENCH_READINGS:-10000000}"
