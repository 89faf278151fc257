//! Tests of the enterprise library and binary without a database. One binary, one module per
//! concern. (Being an integration test of this package also makes cargo build the binary
//! before the enterprise system tests, which start it, run.)

mod cli;
mod composition;
mod gated;
