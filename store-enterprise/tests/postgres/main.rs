//! The Postgres backends against a real PostgreSQL server (`DG_PG_URL`, see `support`).

mod conformance;
mod integrity;
mod isolation;
mod migrations;
mod quotas;
mod store;
mod support;
