#!/usr/bin/env bash
# Runs every check CI runs, in order: formatting, clippy (-D warnings), the dependency-direction
# check, and every test of the workspace, including the system tests that drive the real server
# with the official MCP clients. It installs what the tests need: the Python `mcp` SDK into a
# venv, the TypeScript SDK into system-tests/clients/typescript/node_modules and the OpenID
# provider of the enterprise tests into enterprise-system-tests/oidc/node_modules (all pinned),
# and makes PostgreSQL and Redis answer on loopback (scripts/postgres.sh, scripts/redis.sh).
#
# CARGO_TARGET_DIR defaults to a cache directory outside the clone, so repeated runs and fresh
# clones reuse one build; set it to override. The venv lives in the same cache directory.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins the version" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 not found: the checks and the Python MCP client need it (apt-get install python3 python3-venv)" >&2
  exit 1
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm not found: the TypeScript MCP client needs them (apt-get install nodejs npm)" >&2
  exit 1
fi

step "official MCP clients (Python mcp, TypeScript @modelcontextprotocol/sdk)"
requirements=system-tests/clients/python/requirements.txt
venv="$cache/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Reinstall only when the pinned requirements change.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
fi
npm ci --prefix system-tests/clients/typescript --silent --no-audit --no-fund
step "the OpenID provider the enterprise tests start (oidc-provider, pinned)"
npm ci --prefix enterprise-system-tests/oidc --silent --no-audit --no-fund
export DG_PYTHON="$venv/bin/python"
export DG_TS_DRIVER="$PWD/system-tests/clients/typescript/driver.mjs"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "the core builds without its optional SQLite backend"
cargo check -p decision-gate-core --no-default-features --locked

step "dependency direction"
cargo metadata --format-version 1 --no-deps --locked | python3 scripts/check_dependency_direction.py

. scripts/postgres.sh # the Postgres tests read DG_PG_URL
. scripts/redis.sh # the rate-limit tests read DG_REDIS_URL and start DG_REDIS_SERVER
step "cargo test (whole workspace; the system tests start the decision-gate binary)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-features --locked 2>&1 | tee "$log"

# One closing line for the whole run: the sum over every test binary and the doc tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i - 1); if ($(i) ~ /^failed;?$/) f += $(i - 1) } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
