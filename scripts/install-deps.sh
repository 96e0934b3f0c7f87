#!/usr/bin/env bash
# install-deps.sh: installs what building, running and testing iotd needs, and only what is
# missing. Idempotent; works as root or through sudo. Called by `make run`, `make test`, `make bench`.
#
#   scripts/install-deps.sh            build + run + test dependencies
#   scripts/install-deps.sh --bench    also the benchmark tools (wrk, nginx)
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config
  # product libraries (Debian's packages only)
  libboost-dev libsimdjson-dev libsqlite3-dev libspdlog-dev libfmt-dev libcli11-dev
  libyaml-cpp-dev libmongoc-dev libbson-dev librdkafka-dev
  # OpenSSL: TLS on the HTTP listeners and the MQTT subscriber, and libcrypto for the access
  # tokens (src/auth: SHA-256, RAND_bytes, CRYPTO_memcmp); libmosquitto: the loadgen's MQTT
  # publisher (docs/mqtt.md)
  libssl-dev libmosquitto-dev
  # front-end assets embedded at build time (web/package-lock.json, npm registry); left out
  # below when an npm is already on PATH (e.g. NodeSource's nodejs, which bundles its own)
  nodejs npm
  # tests: GoogleTest, promtool (Prometheus), Alertmanager (notifications), clang + libFuzzer,
  # sqlite3 CLI, python for e2e
  libgtest-dev libgmock-dev libbenchmark-dev prometheus prometheus-alertmanager clang
  libclang-rt-14-dev
  clang-format clang-tidy sqlite3 python3 python3-pip curl procps
  # the openssl command, with which the TLS tests make their certificates
  openssl
  # tests of the MongoDB store: pymongo for Debian's /usr/bin/python3 (an independent client that
  # checks what iotd wrote); the server itself, FerretDB, is built by scripts/ferretdb.sh
  python3-pymongo
  # tests of the Kafka bus: kcat (an independent client that checks what iotd produced), and Java
  # + Maven for the broker, whose jars scripts/kafka.sh fetches from Maven Central
  kcat default-jre-headless maven
  # tests of the deployment files (tests/deploy): Debian's docker-compose checks the compose
  # files, shellcheck every script, dpkg-dev builds the .deb's dependencies (dpkg-shlibdeps),
  # systemd's systemd-analyze verifies its unit; Go (installed with the machine) checks the
  # Kubernetes manifests and the Dockerfile with Kubernetes' and BuildKit's own Go packages
  docker-compose shellcheck dpkg-dev systemd adduser
  # tests of the web UI (tests/e2e/test_ui.py): headless Chromium, driven by playwright-core
  # (tests/ui/package-lock.json), and a font for its screenshots
  chromium fonts-liberation
  # tests of MQTT ingestion (docs/mqtt.md): the Mosquitto broker and its command-line clients
  mosquitto mosquitto-clients
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(wrk nginx-light)
fi

if command -v npm >/dev/null 2>&1; then
  kept=()
  for p in "${packages[@]}"; do
    [[ $p == nodejs || $p == npm ]] || kept+=("$p")
  done
  packages=("${kept[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

install_ui_test_deps() {
  # playwright-core for tests/ui/ui_check.mjs, from tests/ui/package-lock.json; no install scripts
  # (it would download browsers; the tests use Debian's chromium).
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/ui"
  if [[ ! -f $dir/node_modules/playwright-core/package.json ]]; then
    echo "install-deps: installing tests/ui/node_modules (npm ci)" >&2
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  fi
}

install_pytest() {
  # The end-to-end and deployment tests use pytest and PyYAML with the first python3 on PATH;
  # tests/e2e/test_openapi.py also schemathesis and openapi-spec-validator.
  local module package
  for module in pytest:pytest yaml:pyyaml "schemathesis:schemathesis>=4.32,<5" \
    "openapi_spec_validator:openapi-spec-validator>=0.7,<1"; do
    package=${module#*:}
    if ! python3 -c "import ${module%%:*}" 2>/dev/null; then
      echo "install-deps: installing $package from PyPI" >&2
      python3 -m pip install --quiet "$package" 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages "$package"
    fi
  done
}

if ((${#missing[@]} == 0)); then
  install_pytest
  install_ui_test_deps
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_pytest
install_ui_test_deps
