//! # Layout
//!
//! Test harness for scenarios against real Switchboard servers: real
//! sockets, real processes, no mocks of our own network layers.
//!
//! - [`browser`]: headless Chromium driven over the DevTools protocol.
//! - [`cluster`]: clusters of real processes that form by gossip.
//! - [`client`]: a WebSocket client that speaks the client protocol, with
//!   every wait bounded.
//! - [`http`]: a bare HTTP GET for probing health and metrics endpoints.
//! - [`api`]: server API clients: JSON over HTTP, and gRPC.
//! - [`process`]: starting `switchboard` processes, finding their
//!   addresses, and stopping them (SIGTERM) or killing them (SIGKILL).
//! - [`compose`]: Docker Compose projects, always brought down.
//! - [`prometheus`]: Prometheus' HTTP API (targets, queries).

pub mod api;
pub mod browser;
pub mod client;
pub mod cluster;
pub mod compose;
pub mod http;
pub mod process;
pub mod prometheus;

/// How long any single wait in a scenario may take before it fails.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
