//! System tests of the `decision-gate-enterprise` binary on a real Postgres. One binary, one
//! module per concern.

mod admin;
mod cluster;
mod fault;
mod grpc;
mod identity;
mod integrity;
mod isolation;
mod migrations;
mod oidc;
mod oidc_provider;
mod support;
mod tls;
mod trail;
mod usage;
