#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target for SECONDS (default 30) on a copy of the
# committed corpus, and fails if any target finds a crash.
# Usage: ./scripts/fuzz-smoke.sh [SECONDS]
# Needs the nightly toolchain; installs cargo-fuzz when it is missing. The committed corpus in
# fuzz/corpus/ is never modified; a crashing input is left in fuzz/artifacts/<target>/.
# Builds are release builds with debug assertions and overflow checks (the cargo-fuzz default),
# one libFuzzer process at a time (no -jobs: that forks workers logging to fuzz-N.log).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "usage: $0 [SECONDS]   (a positive number of seconds per target)" >&2
  exit 2
fi

step() { printf '\n==> %s\n' "$*"; }

step "cargo-fuzz and the nightly toolchain"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

targets=(mqtt_decode envelope event_encode tracker server relay)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step "build the fuzz targets"
(cd fuzz && cargo +nightly fuzz build)

failed=()
for target in "${targets[@]}"; do
  step "fuzz $target for ${seconds}s"
  # libFuzzer adds what it finds to the first corpus directory: give it a copy.
  mkdir -p "$work/$target"
  cp -R "fuzz/corpus/$target/." "$work/$target/"
  if ! (cd fuzz && cargo +nightly fuzz run "$target" "$work/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1); then
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
echo "fuzz smoke: ${targets[*]} ran ${seconds}s each without a crash"
