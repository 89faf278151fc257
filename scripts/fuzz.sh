#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) on the nightly toolchain, installing
# cargo-fuzz (pinned) when it is missing. Inputs that grow coverage are added to
# fuzz/corpus/<target>/, which scripts/test.sh replays on stable (fuzz-harness/tests/corpus.rs);
# a crash stops the run and leaves its input in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/.."
# Instrumented nightly builds, apart from the test builds.
export CARGO_TARGET_DIR="${DG_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate/fuzz-target}"
cargo_fuzz_version=0.13.1
if ! cargo +nightly fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  cargo install --quiet --locked --version "$cargo_fuzz_version" cargo-fuzz
fi
targets=(scenario_spec tool_arguments grpc_messages runpack_manifest canonical_json)
cd fuzz
for target in "${targets[@]}"; do
  echo "== $target ($seconds s)"
  # -rss_limit_mb: an input that makes one call hold more is a finding, like a crash.
  cargo +nightly fuzz run --release "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
done
echo "fuzz: every target ran $seconds s without a crash"
