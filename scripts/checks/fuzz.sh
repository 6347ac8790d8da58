#!/usr/bin/env bash
# Fuzzes the parsers that read outside input with cargo-fuzz (libFuzzer + AddressSanitizer),
# each for a bounded time: the S3 cursor object, the YAML configuration, the schema
# endpoint's answer, BCRYPT_SALT and an Avro datum as `decode` reads it (with a 64 MiB
# limit on any one allocation, so a crafted length that gets past the reader's cap is a
# finding). The properties live in src/fuzz_checks.rs.
#
#   scripts/checks/fuzz.sh              60 seconds per target
#   scripts/checks/fuzz.sh 600          10 minutes per target
#   scripts/checks/fuzz.sh 30 salt yaml only these targets
#
# The seed corpus is fuzz/corpus/<target>/ (kept as is); new inputs go to
# fuzz/work/<target>/ (not committed). A crash stops the script; its input is copied to
# fuzz/regressions/<target>/, which `cargo test` replays from then on (commit it with the
# fix). The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its -Z flags.
# cargo-fuzz is installed into a cached root when missing (about 2-3 minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(cursor yaml schema salt datum)

ROOT="${CARGO_FUZZ_ROOT:-/var/cache/pc-reserve-poller/cargo-bin}"
export PATH="$ROOT/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz into $ROOT" >&2
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$ROOT"
fi
export RUSTC_BOOTSTRAP=1

build_started=$(date +%s)
for t in "${TARGETS[@]}"; do cargo fuzz build "$t"; done
echo "fuzz.sh: build took $(( $(date +%s) - build_started ))s" >&2

summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/regressions/$t"
  rm -rf "fuzz/artifacts/$t"
  log="fuzz/work/$t.log"
  extra=()
  [ "$t" = datum ] && extra=(-malloc_limit_mb=64)
  if ! cargo fuzz run "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=4096 "${extra[@]}" \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    for a in fuzz/artifacts/"$t"/*; do
      [ -f "$a" ] && cp "$a" "fuzz/regressions/$t/" && echo "fuzz.sh: finding saved as fuzz/regressions/$t/$(basename "$a")" >&2
    done
    echo "fuzz.sh: $t FAILED (see $log)" >&2
    exit 1
  fi
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
  secs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE 'in [0-9]+' | grep -oE '[0-9]+' | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+')
  summary+=("$t: ${runs:-?} executions in ${secs:-$SECONDS_EACH}s, coverage ${cov:-?} edges, no finding")
done
printf 'fuzz.sh: %s\n' "${summary[@]}" >&2
