#!/usr/bin/env bash
# kafka.sh: the Apache Kafka broker jars that the BUS=kafka tests run.
#
#   scripts/kafka.sh build   fetch the jars once into the cache, print their libs/ directory
#   scripts/kafka.sh path    print where that directory is (or will be), without fetching
#
# The jars are Kafka 3.9.1 and what it needs at run time (tests/kafka/pom.xml), copied from Maven
# Central by `mvn dependency:copy-dependencies`. They are cached under
# ${IOT_CACHE_DIR:-$HOME/.cache/iotd}, the directory keyed by a hash of the pom, so they are
# fetched again only when it changes. The test harnesses (tests/testing/kafka.cc,
# tests/e2e/kafka_broker.py) start the broker from them with `java -cp 'libs/*' kafka.Kafka`;
# CMake bakes `path` into the C++ tests, and scripts/test.sh and the Makefile pass `build`'s output
# to all tests as KAFKA_LIBS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
pom=$root/tests/kafka/pom.xml
version=3.9.1
cache=${IOT_CACHE_DIR:-$HOME/.cache/iotd}

libs_path() {
  local key
  key=$(sha256sum <"$pom" | cut -c1-16)
  echo "$cache/kafka-$version-$key/libs"
}

# complete is whether `dir` holds a finished copy: the broker's jar is the last thing checked, and
# the directory only appears (by rename) once the copy has succeeded.
complete() {
  [[ -f "$1/kafka_2.13-$version.jar" ]]
}

build() {
  local libs dir tool tmp
  libs=$(libs_path)
  if complete "$libs"; then
    echo "$libs"
    return 0
  fi
  for tool in java mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "kafka.sh: ERROR: '$tool' was not found on PATH." >&2
      echo "kafka.sh: the Kafka tests need a Java runtime (17 or later) to run the broker and" \
        "Maven to fetch its jars: run scripts/install-deps.sh (or apt-get install" \
        "openjdk-17-jre-headless maven), then 'scripts/kafka.sh build'." >&2
      return 1
    fi
  done
  dir=$(dirname "$libs")
  mkdir -p "$cache"
  # One fetch at a time: parallel callers wait, then find the jars there.
  exec 9>"$cache/.kafka.lock"
  flock 9
  if complete "$libs"; then
    echo "$libs"
    return 0
  fi
  echo "kafka.sh: fetching Apache Kafka $version's jars from Maven Central (once)" >&2
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" "$dir"
  mkdir -p "$tmp"
  if ! mvn -B -q --no-transfer-progress -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1 || ! complete "$tmp/libs"; then
    cat "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    echo "kafka.sh: ERROR: 'mvn dependency:copy-dependencies' of $pom failed (see above)." >&2
    echo "kafka.sh: it needs Maven Central to fetch Kafka $version and its dependencies; check" \
      "the network or ~/.m2/settings.xml, then rerun 'scripts/kafka.sh build'." >&2
    return 1
  fi
  rm -f "$tmp/mvn.log"
  mv "$tmp" "$dir"
  # Copies made from older versions of the pom are dead weight.
  find "$cache" -maxdepth 1 -name 'kafka-*' ! -name "$(basename "$dir")" -type d \
    -exec rm -rf {} + 2>/dev/null || true
  echo "$libs"
}

case "${1:-}" in
  build) build ;;
  path) libs_path ;;
  *)
    echo "usage: $0 build|path" >&2
    exit 2
    ;;
esac
