//! The core's integration tests: one binary, one module per concern.

mod comparators;
mod conformance;
mod determinism;
mod durability;
mod lifecycle;
mod limits;
mod properties;
mod providers;
mod ret;
mod runpacks;
mod support;
mod transition;
mod validation;
