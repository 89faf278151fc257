//! The MCP face of Decision Gate: the tool surface through `rmcp` over stdio and Streamable
//! HTTP, open-source authentication (local-only, static bearer tokens, mTLS), request limits,
//! metrics and the `decision-gate` command line. Every tool handler builds a request context
//! and calls one method of the service layer in `decision-gate-core`; no engine logic lives
//! here.
//!
//! Code map: [`config`] (the TOML file), [`server`] (the composition root), [`handler`] (the
//! `rmcp` handler), [`tools`] (catalogue and dispatch), [`error`] (the one error mapping),
//! [`http`] and [`tls`] (the HTTP transport and its guard), [`admission`] (the checks every
//! network request passes), [`slots`] (counted slots per principal), [`noise`] (the
//! authentication-failure budget per source and keyed credential digests), [`auth`],
//! [`metrics`], [`caller`], [`external`] (evidence providers that are MCP servers).

pub mod admission;
pub mod auth;
pub mod caller;
pub mod config;
pub mod error;
pub mod external;
pub mod grpc;
pub mod handler;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod noise;
pub mod secret_file;
pub mod server;
pub mod slots;
pub mod tls;
pub mod tools;

pub use config::{CONFIG_ENV, Config, Loaded};
pub use server::{Bound, DataDir, GrpcServer, HttpServer, ServeError, Server, ServerBuilder};
