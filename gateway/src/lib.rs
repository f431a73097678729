//! # Layout
//!
//! The gateway side of Switchboard: terminates client WebSockets,
//! authenticates, enforces limits, and routes each channel's traffic to the
//! broker that owns it, fanning deliveries out to local subscribers.
//!
//! - [`server`]: the listeners, HTTP routes (`/ws`, `/metrics`, `/healthz`, `/readyz`) and drain.
//! - [`gateway`]: the state one gateway shares with its connections and the server API.
//! - [`dev`]: the dev process: the gateway and an in-process broker, with one drain.
//! - [`edge_tls`]: TLS on the client and API ports (`wss://`, HTTPS, gRPC over TLS), reloaded when the files change.
//! - [`edge_stream`]: an accepted connection, plain or TLS, as one stream type.
//! - [`first_bytes`]: a deadline on a connection's first bytes, while HTTP/1 and HTTP/2 are told apart.
//! - [`socket_budget`]: one budget for every accepted socket, per-address caps and connection rate.
//! - [`idle_watch`]: when an HTTP/1 or HTTP/2 connection counts as idle, to be shut down.
//! - [`refusal`]: the socket and API limits, each counted in a metric and logged once per interval.
//! - [`api`]: the server API for application backends, HTTP JSON under `/api/` and gRPC.
//! - [`demo`]: the demo chat at `/`, the embedded JavaScript client, and guest tokens.
//! - [`handshake`]: the WebSocket upgrade, subprotocol selection and token discovery.
//! - [`connection`]: one connection's IO loop: reads, batched writes, pings, close codes.
//! - [`outbox`]: frames by subprotocol: one message each, or batched (`switchboard.batch`), and a client frame's requests.
//! - [`session`]: one connection's protocol state and how each request is carried out.
//! - [`auth`]: JWT verification into an identity (token policy: lifetime, `aud`, `iss`, `crit`); token issuing.
//! - [`key_set`]: verification keys by algorithm and `kid`, from config or a JWKS document, and the choice of one for a token.
//! - [`jwks`]: a JWKS document read from a file or fetched over HTTPS, and kept fresh.
//! - [`hub`]: local fan-out from one owner subscription to many connections.
//! - [`router`]: [`Router`], this gateway's view of the cluster: each call
//!   to the channel's owner, one link (stream re-attached) per broker, a
//!   sans-IO subscription table for order and de-duplication, and the
//!   reconciler that places subscriptions make-before-break.
//! - [`rate_limit`]: the per-connection token bucket.
//! - [`channel_quota`]: distinct channels one connection may touch per interval.
//! - [`error`]: request errors and disconnect reasons, with their wire codes and
//!   frames (the wire format itself is `switchboard_core::frame`).
//! - [`pusher`]: the Pusher-compatible door at `/app/{key}` (docs/pusher.md).
//! - [`telemetry`]: metric names and the Prometheus recorder.
//! - [`config`]: gateway settings, and the Pusher door's apps ([`config::pusher`]).

pub mod api;
pub mod auth;
pub mod channel_quota;
pub mod config;
pub mod connection;
pub mod demo;
pub mod dev;
pub mod edge_stream;
pub mod edge_tls;
pub mod error;
pub mod first_bytes;
pub mod gateway;
pub mod handshake;
pub mod hub;
pub mod idle_watch;
pub mod jwks;
pub mod key_set;
pub mod outbox;
pub mod pusher;
pub mod rate_limit;
pub mod refusal;
pub mod router;
pub mod server;
pub mod session;
pub mod socket_budget;
pub mod telemetry;

pub use config::{
    ApiConfig, AuthConfig, EdgeTlsConfig, GatewayConfig, KeyAlgorithm, KeyConfig, Limits, Settings,
};
pub use gateway::Gateway;
pub use router::Router;
pub use server::{GatewayError, Listeners, run, run_with};
