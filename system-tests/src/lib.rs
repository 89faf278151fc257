//! Black-box system tests of the open-source `decision-gate` binary: they start the real server
//! on a free loopback port (and over stdio) and drive it with the official MCP clients (Python
//! `mcp`, TypeScript `@modelcontextprotocol/sdk`) and with raw HTTP. The tests are in
//! `tests/system`; `scripts/test.sh` installs the clients and points the tests at them with
//! `DG_PYTHON` and `DG_TS_DRIVER`.

/// The server's generated gRPC messages and client, for every suite that drives a server over
/// gRPC: this one and the enterprise system tests (which reach the MCP crate only through here).
pub use decision_gate_mcp::grpc::pb as grpc_pb;

pub mod pki;
