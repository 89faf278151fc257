//! Decision Gate core (placeholder lib for incremental compile).
pub mod access;
pub mod comparator;
pub mod disclosure;
pub mod engine;
pub mod error;
pub mod evidence;
pub mod hashing;
pub mod ids;
pub mod memory;
pub mod provider;
pub mod ret;
pub mod run;
pub mod schema;
pub mod service;
pub mod spec;
pub mod store;
pub mod time;
