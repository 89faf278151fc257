#!/usr/bin/env bash
# Runs every check CI runs, in order: formatting, clippy (-D warnings), the dependency-direction
# check, and every test of the workspace. Installs nothing it does not need; today the tests need
# only the Rust toolchain pinned in rust-toolchain.toml (SQLite is compiled in).
#
# CARGO_TARGET_DIR defaults to a cache directory outside the clone, so repeated runs and fresh
# clones reuse one build; set it to override.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins the version" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 not found: the dependency-direction check needs it (apt-get install python3)" >&2
  exit 1
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "the core builds without its optional SQLite backend"
cargo check -p decision-gate-core --no-default-features --locked

step "dependency direction"
cargo metadata --format-version 1 --no-deps --locked | python3 scripts/check_dependency_direction.py

step "cargo test (whole workspace)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-features --locked 2>&1 | tee "$log"

# One closing line for the whole run: the sum over every test binary and the doc tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i - 1); if ($(i) ~ /^failed;?$/) f += $(i - 1) } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
