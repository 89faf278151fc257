#!/usr/bin/env bash
# Runs the benchmarks of one area in release mode and prints one line per target:
#   BENCH <area>.<name> <measured> <unit> target <op> <value> <pass|FAIL>
# Every figure is a ratio against a baseline measured in the same run.
#
# Areas: core (RET vs Cedar and regorus; per-trigger cost at 10 vs 10,000 earlier triggers).
set -euo pipefail
area="${1:?usage: scripts/bench.sh AREA   (areas: core)}"
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate/target}"
cargo run --quiet --release --locked --manifest-path benches/Cargo.toml -- "$area"
