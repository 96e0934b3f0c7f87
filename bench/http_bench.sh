#!/usr/bin/env bash
# http_bench.sh: POST /ingest throughput of iot::http (bench/http_echo_server) and of nginx
# answering 202 the same way, measured with wrk on keep-alive connections.
#
#   bench/http_bench.sh <build-dir>/bench/http_echo_server [duration (10s)] [connections (64)]
#
# Both servers get 2 threads/workers. The numbers depend on the machine and on what else runs
# on it; compare the two on the same run. Notes and past results: bench/http_bench.md.
set -euo pipefail

server_bin=${1:?usage: $0 <http_echo_server> [duration] [connections]}
duration=${2:-10s}
connections=${3:-64}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# cpu_ticks <field> <pid>...: sum of utime (14) or stime (15) of the processes, in clock ticks.
cpu_ticks() {
  local field=$1 sum=0 pid
  shift
  for pid in "$@"; do sum=$((sum + $(awk -v f="$field" '{print $f}' "/proc/$pid/stat"))); done
  echo "$sum"
}

# run_wrk <name> <url> <pid>...: runs wrk and prints, besides wrk's report, the server's CPU
# time per request (user and system), a figure that other load on the machine disturbs less
# than requests per second.
run_wrk() {
  local name=$1 url=$2
  shift 2
  local hz u0 s0 u1 s1 requests
  hz=$(getconf CLK_TCK)
  u0=$(cpu_ticks 14 "$@"); s0=$(cpu_ticks 15 "$@")
  echo "== $name"
  wrk -t2 -c"$connections" -d"$duration" --latency -s "$here/post.lua" "$url" | tee "$work/wrk.out"
  u1=$(cpu_ticks 14 "$@"); s1=$(cpu_ticks 15 "$@")
  requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$requests" -v hz="$hz" \
    'BEGIN { printf "server CPU per request: user %.2f us, system %.2f us\n", u * 1e6 / hz / n, s * 1e6 / hz / n }'
}

# iot::http
"$server_bin" 0 2 >"$work/iot.out" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/iot.out" && break; sleep 0.05; done
iot_port=$(awk '/listening/ {print $3}' "$work/iot.out")
run_wrk "iot::http (http_echo_server, 2 threads)" "http://127.0.0.1:$iot_port/ingest" "${pids[0]}"

# nginx, 2 workers, same response
nginx_port=$(free_port)
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  server {
    listen 127.0.0.1:$nginx_port;
    location = /ingest {
      default_type application/json;
      return 202 '{"status":"accepted"}';
    }
  }
}
CONF
/usr/sbin/nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 100); do
  curl -s -o /dev/null -X POST "http://127.0.0.1:$nginx_port/ingest" && break
  sleep 0.05
done
# shellcheck disable=SC2046
run_wrk "nginx (2 workers, return 202)" "http://127.0.0.1:$nginx_port/ingest" $(pgrep -P "${pids[1]}")
