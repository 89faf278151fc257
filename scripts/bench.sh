#!/usr/bin/env bash
# Runs the benchmarks of one area in release mode and prints one line per target:
#   BENCH <area>.<name> <measured> <unit> target <op> <value> <pass|FAIL>
# Every figure is a ratio against a baseline measured in the same run.
#
# Areas:
#   core  RET vs Cedar and regorus; per-trigger cost at 10 vs 10,000 earlier triggers.
#   mcp   scenario_next over Streamable HTTP (the release decision-gate binary, a load client in
#         another process) against an rmcp echo tool served the same way; p99 at half load.
#   grpc  Next over gRPC against scenario_next over MCP, from one server in one run, and
#         against the gRPC health check through the same stack; beside them the health check
#         against the MCP echo tool, the bound on the first ratio.
#   sqlite  scenario_next over Streamable HTTP against the release decision-gate binary on SQLite
#         (eight clients, then one), group commit on against off, fresh server per phase;
#         beside it the raw write + fdatasync rate of the data directory's file system.
#   limits  what hostile input costs: contains over 10,000 x 10,000 items (against the scan per
#         item it replaced, measured in the same run); scenario_next over Streamable HTTP with
#         the limits at their defaults against every limit at its ceiling, same release binary.
#   authz  authentication + authorization per call (API key, cached OIDC token, a refusal),
#         in process on the enterprise server's own parts; scenario_next throughput through the
#         release decision-gate-enterprise binary on Postgres with an API key or an OIDC token
#         against a configured bearer token.
#   postgres  scenario_next through the release decision-gate-enterprise binary on Postgres
#         (scripts/postgres.sh): RLS forced vs disabled on a scratch copy, against the
#         trigger's own statements replayed by pgbench as the application role; per-trigger
#         cost at 10 vs 10,000 triggers.
#   usage  ledger ingest events/s through the Postgres usage meter (batched and one per
#         record); scenario_next throughput through the release decision-gate-enterprise binary
#         with metering and quotas against metering off (eight clients of one tenant); one local
#         rate-limit decision.
set -euo pipefail
area="${1:?usage: scripts/bench.sh AREA   (areas: core, authz, mcp, grpc, limits, postgres, sqlite, usage)}"
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate/target}"
if [ "$area" = mcp ] || [ "$area" = grpc ] || [ "$area" = sqlite ] || [ "$area" = limits ]; then
  cargo build --quiet --release --locked -p decision-gate-mcp --bin decision-gate
  export DG_BIN="$CARGO_TARGET_DIR/release/decision-gate"
fi
if [ "$area" = postgres ] || [ "$area" = authz ] || [ "$area" = usage ]; then
  cargo build --quiet --release --locked -p decision-gate-enterprise --bin decision-gate-enterprise
  export DG_ENTERPRISE_BIN="$CARGO_TARGET_DIR/release/decision-gate-enterprise"
  . scripts/postgres.sh # exports DG_PG_URL
fi
cargo run --quiet --release --locked --manifest-path benches/Cargo.toml -- "$area"
