//! The enterprise composition root of Decision Gate: organisations, tenants and namespaces;
//! OIDC and API-key identity; role-based authorization; quotas and rate limits; the hash-chained
//! audit log; trust-hardening; the admin API and console; and the `decision-gate-enterprise`
//! binary that plugs these into the same core seams the open-source server uses. It depends on
//! the core, the MCP server and the enterprise stores, never the other way round. Built by the
//! enterprise issues; today this crate only fixes its place in the dependency graph.
