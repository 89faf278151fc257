//! Black-box system tests of the open-source `decision-gate` binary: they start the real server
//! and drive it with the official MCP clients (Python `mcp`, TypeScript
//! `@modelcontextprotocol/sdk`). The harness arrives with the MCP server issue; today this crate
//! only fixes its place in the dependency graph.
