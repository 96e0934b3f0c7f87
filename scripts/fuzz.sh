#!/usr/bin/env bash
# fuzz.sh SECONDS: runs every libFuzzer target of build/fuzz for SECONDS each, on a copy of its
# seed corpus (the repository's corpus is not modified). Fails on any crash or sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
status=0
for target in build/fuzz/tests/fuzz/*_fuzz; do
  [ -x "$target" ] || continue
  name=$(basename "$target" _fuzz)
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$name/." "$work/" 2>/dev/null || true
  echo "fuzzing $name for ${seconds}s"
  if ! "$target" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$work/" \
      "$work" >"$work.log" 2>&1; then
    tail -50 "$work.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$work.log" | head -3
  fi
  rm -rf "$work" "$work.log"
done
exit $status
