//! # Layout
//!
//! The test kit: what Switchboard's tests start and drive, with real
//! sockets and real processes, no mocks of our own network layers.
//! Processes run the binary a test names with
//! `env!("CARGO_BIN_EXE_switchboard")`, so scenarios that start processes
//! live in the root package's `tests/`.
//!
//! - [`server`]: the dev process (gateway and broker) in this process, on
//!   loopback ports.
//! - [`settings`]: `Settings::for_test()`, the test secret, API keys and tokens.
//! - [`browser`]: headless Chromium driven over the DevTools protocol.
//! - [`cluster`]: clusters of real processes that form by gossip, over mutual TLS.
//! - [`gossip_key`]: gossip key files made in the test: the one every
//!   process a test run starts shares, and others.
//! - [`certificates`]: a cluster CA and node certificates for tests.
//! - [`edge_ca`]: a CA and server certificates for the gateway's public
//!   listeners (`wss://`, HTTPS), and client configurations trusting it.
//! - [`broker_client`]: a gRPC client of a broker's port, with or without
//!   TLS and certificates, as an outsider would run it.
//! - [`client`]: a WebSocket client that speaks the client protocol, with
//!   every wait bounded.
//! - [`http`]: a bare HTTP GET for probing health and metrics endpoints.
//! - [`checker`]: the per-channel continuity checker of fault scenarios,
//!   sans-IO: acknowledgements and deliveries in, counts of what broke out.
//! - [`scenario`]: fault scenarios under steady publishing: a cluster of
//!   real processes, publishers and subscribers, one fault, the checker's
//!   report and the failover times.
//! - [`fault`]: the faults a scenario injects (kill, freeze, partition,
//!   rolling restart, join and drain) and when channels moved.
//! - [`fleet`]: a scenario's brokers, restartable at fixed addresses, and
//!   gateways.
//! - [`partition`]: a network namespace a broker runs in, cut off and
//!   healed with iptables.
//! - [`split`]: a partial partition: two namespaces routed through the
//!   host, cut from each other while the host reaches both.
//! - [`traffic`]: a scenario's publishers (server API, idempotent retries)
//!   and subscribers, recorded as checker events.
//! - [`load`]: steady publishing across a change, and the check that every
//!   acknowledged publication arrived once, in order, in its epoch.
//! - [`api`]: server API clients: JSON over HTTP, and gRPC.
//! - [`process`]: starting `switchboard` processes, finding their
//!   addresses, and stopping them (SIGTERM) or killing them (SIGKILL).
//! - [`compose`]: Docker Compose projects, always brought down.
//! - [`prometheus`]: Prometheus' HTTP API (targets, queries).
//! - [`python`]: a virtualenv per pinned requirements file, and commands
//!   run within a deadline.
//! - [`pusher`]: the Pusher door's test app, URL, signatures and a raw client.
//! - [`webhook`]: a webhook endpoint on loopback that records what it is sent.

pub mod api;
pub mod broker_client;
pub mod browser;
pub mod certificates;
pub mod checker;
pub mod client;
pub mod cluster;
pub mod compose;
pub mod edge_ca;
pub mod fault;
pub mod fleet;
pub mod gossip_key;
pub mod http;
pub mod load;
pub mod partition;
pub mod process;
pub mod prometheus;
pub mod pusher;
pub mod python;
pub mod scenario;
pub mod server;
pub mod settings;
pub mod split;
pub mod traffic;
pub mod webhook;

pub use server::TestServer;
pub use settings::ForTest;

/// How long any single wait in a scenario may take before it fails.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
