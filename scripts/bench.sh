#!/usr/bin/env bash
# bench.sh: the micro-benchmarks (Google Benchmark), the store benchmarks, the system
# benchmark (bench/system_bench.py), the cost of authentication (bench/auth_bench.py), of TLS and
# rate limits (bench/tls_bench.sh), Kafka and MQTT ingestion. Prints
# figures; asserts nothing about timing. Each benchmark's output is also saved as
# $BENCH_OUT/<name>.txt (default $BENCH_BUILD/bench/results; BENCH_BUILD, the build directory,
# defaults to build/release).
#   BENCH_RUNS=3 BENCH_READINGS=10000000 scripts/bench.sh
#   IOT_BENCH_READINGS=1000000 IOT_BENCH_LOAD_SECONDS=120 scripts/bench.sh  # mongo_store_bench
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BENCH_BUILD:-build/release}
B=$BUILD/bench
OUT=${BENCH_OUT:-$B/results}
mkdir -p "$OUT"
echo "bench outputs: $OUT"

# run NAME CMD...: runs a benchmark, printing its output and saving it as $OUT/NAME.txt.
run() {
  local name=$1
  shift
  echo "=== $name"
  "$@" 2>&1 | tee "$OUT/$name.txt"
}

for b in codec_bench bus_bench auth_check_bench; do
  run "$b" "$B/$b" --benchmark_min_time=0.5 --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true
done
run store_bench env IOT_STORE_BENCH_READINGS="${IOT_STORE_BENCH_READINGS:-1000000}" \
  "$B/store_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
# MongoStore against FerretDB next to SqliteStore (about 15 minutes; see the file's comment).
run mongo_store_bench env FERRETDB="$(scripts/ferretdb.sh build)" \
  IOT_BENCH_READINGS="${IOT_BENCH_READINGS:-1000000}" "$B/mongo_store_bench"
run system python3 bench/system_bench.py --iotd "$BUILD/src/app/iotd" \
  --runs "${BENCH_RUNS:-3}" --readings "${BENCH_READINGS:-10000000}"
# The cost of authentication on POST /ingest (INGEST_AUTH=off vs token; docs/security.md).
run auth python3 bench/auth_bench.py --iotd "$BUILD/src/app/iotd" --runs "${BENCH_RUNS:-3}"
# Distributed mode: one local Kafka broker, iotd ingest / iotd all on it (about 6 minutes).
run kafka env KAFKA_LIBS="$(scripts/kafka.sh build)" python3 bench/kafka_bench.py \
  --iotd "$BUILD/src/app/iotd" --runs "${BENCH_RUNS:-3}"
# MQTT ingestion (docs/mqtt.md): QoS 1 through a local Mosquitto into one iotd all.
run mqtt python3 bench/mqtt_bench.py --iotd "$BUILD/src/app/iotd" --runs "${BENCH_RUNS:-3}"
