//! System tests: the real `decision-gate` binary, driven by the official MCP clients and raw
//! HTTP. One binary, one module per concern.

mod abuse;
mod auth;
mod clients;
mod durability;
mod grpc;
mod http;
mod providers;
mod support;
