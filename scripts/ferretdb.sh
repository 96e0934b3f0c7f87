#!/usr/bin/env bash
# ferretdb.sh: the FerretDB binary (a MongoDB wire-protocol server) that the MongoDB tests run.
#
#   scripts/ferretdb.sh build   build tests/ferretdb once into the cache, print its path
#   scripts/ferretdb.sh path    print where that binary is (or will be), without building
#
# The binary is tests/ferretdb (FerretDB v1.24.2 embedded in a small main, see its main.go for
# why not `go install`), built with Go from the Go module proxy. It is cached under
# ${IOT_CACHE_DIR:-$HOME/.cache/iotd}, its file name keyed by a hash of go.mod, go.sum and
# main.go, so it is rebuilt only when one of them changes. Called by install-deps.sh; CMake bakes
# `path` into the C++ tests, and the end-to-end tests read it from FERRETDB.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/tests/ferretdb
version=v1.24.2
cache=${IOT_CACHE_DIR:-$HOME/.cache/iotd}

binary_path() {
  local key
  key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
  echo "$cache/ferretdb-$version-$key"
}

find_go() {
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  else
    return 1
  fi
}

build() {
  local out go tmp
  out=$(binary_path)
  if [[ -x "$out" ]]; then
    echo "$out"
    return 0
  fi
  if ! go=$(find_go); then
    echo "ferretdb.sh: ERROR: 'go' was not found (not on PATH, not in /usr/local/go/bin)." >&2
    echo "ferretdb.sh: the MongoDB tests need Go to build FerretDB from $src." >&2
    return 1
  fi
  mkdir -p "$cache"
  # One build at a time: parallel callers wait, then find the binary there.
  exec 9>"$cache/.ferretdb.lock"
  flock 9
  if [[ -x "$out" ]]; then
    echo "$out"
    return 0
  fi
  echo "ferretdb.sh: building FerretDB $version with $("$go" version) (a few minutes, once)" >&2
  tmp="$out.tmp.$$"
  if ! (cd "$src" && CGO_ENABLED=0 "$go" build -mod=readonly -buildvcs=false -trimpath \
    -o "$tmp" .) >&2
  then
    rm -f "$tmp"
    echo "ferretdb.sh: ERROR: 'go build' of $src failed (see above)." >&2
    echo "ferretdb.sh: it needs the Go module proxy ($("$go" env GOPROXY)) to fetch FerretDB" \
      "$version and its modules; check the network or GOPROXY, then rerun" \
      "'scripts/ferretdb.sh build'." >&2
    return 1
  fi
  mv -f "$tmp" "$out"
  # Older builds of other versions of the wrapper are dead weight.
  find "$cache" -maxdepth 1 -name 'ferretdb-*' ! -name "$(basename "$out")" ! -name '*.lock' \
    -type f -delete 2>/dev/null || true
  echo "$out"
}

case "${1:-}" in
  build) build ;;
  path) binary_path ;;
  *)
    echo "usage: $0 build|path" >&2
    exit 2
    ;;
esac
