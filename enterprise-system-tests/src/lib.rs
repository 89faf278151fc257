//! System tests of the `decision-gate-enterprise` binary: the open-source scenarios again, plus
//! tenant isolation, quotas, audit-chain verification and multi-replica behaviour against real
//! Postgres, S3 and OIDC servers on loopback. Built by the enterprise issues; today this crate
//! only fixes its place in the dependency graph.
