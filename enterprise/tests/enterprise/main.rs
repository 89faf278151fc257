//! Tests of the enterprise library and binary. One binary, one module per concern; the
//! authorizer suite runs on the Postgres at `DG_PG_URL`. (Being an integration test of this package also makes cargo build the binary
//! before the enterprise system tests, which start it, run.)

mod authorizer;
mod changes;
mod cli;
mod composition;
mod gated;
mod roles;
mod usage;
