//! Black-box system tests of the `decision-gate-enterprise` binary: tenant isolation through
//! every tool, concurrent migrations, a Postgres crash mid-load, the integrity scan and the
//! start-up schema check. The tests are in `tests/system`; they need a Postgres at `DG_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`; `scripts/postgres.sh` provides one)
//! and the PostgreSQL server binaries for the private cluster of the fault test.
