//! Enterprise storage for Decision Gate: PostgreSQL backends of `ScenarioStore`, `RunStore` and
//! `SchemaRegistry` with row-level security, and an S3 `RunpackStore` with object lock. Each
//! backend implements a seam of `decision-gate-core` and must pass that seam's conformance suite.
//! The backends arrive with the enterprise data-plane issue; today this crate only fixes its
//! place in the dependency graph.
