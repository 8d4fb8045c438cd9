#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a fixed time and prints libFuzzer's
# final statistics. An input that makes the target hold more than 256 MiB, or
# ask for more than 64 MiB at once, counts as a crash (-rss_limit_mb,
# -malloc_limit_mb): a class that blows memory up is a bug like a panic. Crashes land in fuzz/artifacts/<target>/; turn each into a
# regression test (see src/spc/tests.rs, "fuzz regressions").
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default: 60 s, all targets)
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, -Cpasses=sancov...);
# on the stable toolchain installed here RUSTC_BOOTSTRAP=1 makes rustc accept them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(parse_mount parse_objects object_path authority_relay)
fi

if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
# AddressSanitizer keeps freed memory in a quarantine (256 MB by default) to
# catch use after free; the RSS limit would count it as the target's own.
# 32 MB keeps the check and lets the limit see what an input really holds.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=32}"

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "fuzz: $target for ${seconds}s" >&2
  cargo fuzz build --release "$target" >&2
  started=$(date +%s)
  set +e
  cargo fuzz run --release "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 \
    -rss_limit_mb=256 -malloc_limit_mb=64 \
    >"artifacts/$target/run.log" 2>&1
  status=$?
  set -e
  ended=$(date +%s)
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "artifacts/$target/run.log" | grep -o '[0-9]*$' || echo "?")
  echo "FUZZ | $target | $((ended - started)) s | $runs executions | exit $status | corpus $(ls "corpus/$target" | wc -l) inputs"
  if [[ $status -ne 0 ]]; then
    tail -40 "artifacts/$target/run.log" >&2
    exit "$status"
  fi
done
