//! The MCP face of Decision Gate: the `rmcp` tool surface over stdio and Streamable HTTP,
//! the gRPC API, open-source authentication (local-only, static bearer tokens, mTLS) and the
//! `decision-gate` command line. Every handler builds a request context and calls one method of
//! the service layer in `decision-gate-core`; no engine logic lives here. The tool surface
//! arrives with the MCP server issue; today this crate only fixes its place in the dependency
//! graph.
