#!/usr/bin/env bash
# tls_bench.sh: the cost of HTTPS and of the rate limits on POST /ingest. One `iotd all` per
# configuration, wrk -t2 -c64 for 10 s, 3 runs each, the median printed:
#   plain       no TLS, no limits (the baseline)
#   ratelimits  RATE_LIMIT_DEVICE and RATE_LIMIT_CLIENT on, set so high that nothing is refused:
#               the cost of taking a token per request and per reading
#   tls         TLS_CERT_FILE/TLS_KEY_FILE (an EC P-256 certificate made here); wrk's TLS runs on
#               the same 2 cores, so this is an upper bound of iotd's own cost
# Usage: bench/tls_bench.sh [path/to/iotd]   (needs wrk and openssl; make bench installs them)
set -euo pipefail
IOTD=${1:-build/release/src/app/iotd}
POST_LUA=$(cd "$(dirname "$0")" && pwd)/post.lua
RUNS=${BENCH_RUNS:-3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
port=$((20000 + RANDOM % 20000))

# measure NAME SCHEME ENV...: prints the runs and the median requests/s of one configuration.
measure() {
  local name=$1 scheme=$2
  shift 2
  rm -rf "$dir/data"
  env DATA_DIR="$dir/data" INGEST_PORT="$port" DASHBOARD_PORT=$((port + 1)) \
    BIND_ADDRESS=127.0.0.1 LOG_LEVEL=warn "$@" "$IOTD" all >"$dir/iotd.log" 2>&1 &
  local pid=$! rs=()
  for _ in $(seq 50); do
    curl -sfk "$scheme://127.0.0.1:$((port + 1))/ready" >/dev/null && break
    sleep 0.1
  done
  for _ in $(seq "$RUNS"); do
    rs+=("$(wrk -t2 -c64 -d10s -s "$POST_LUA" "$scheme://127.0.0.1:$port/ingest" |
      awk '/Requests\/sec/{print $2}')")
  done
  kill "$pid"
  wait "$pid" || true
  printf '%-11s runs: %s  median: %s requests/s\n' "$name" "${rs[*]}" \
    "$(printf '%s\n' "${rs[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")"
}

echo "POST /ingest, one device, wrk -t2 -c64 10 s, $RUNS runs"
measure plain http
measure ratelimits http RATE_LIMIT_DEVICE=1000000000 RATE_LIMIT_CLIENT=1000000000
measure tls https TLS_CERT_FILE="$dir/cert.pem" TLS_KEY_FILE="$dir/key.pem"
