//! # Layout
//!
//! A Switchboard client for Rust programs (backends, load tools, cluster
//! tests), with the semantics of the JavaScript client: it reconnects with
//! capped exponential backoff and full jitter, resubscribes every channel
//! from the last position it delivered and says whether continuity was
//! recovered, sends requests with ids and timeouts, notices half-open
//! connections, and follows the server's `disconnect` advice.
//!
//! - [`client`]: [`Client`], the application's handle, its [`ClientBuilder`], and
//!   [`Subscription`] handles.
//! - `options`: timeouts, intervals and bounds the builder sets.
//! - [`connection`]: the background task that owns the socket, reconnects and resubscribes
//!   (its parts, one file each, are listed in its own module docs).
//! - [`subscription`]: subscription events, and the per-channel position
//!   tracking the connection keeps.
//! - [`request`]: requests in flight or waiting for a connection, with their deadlines.
//! - [`backoff`]: reconnect delays with full jitter.
//! - [`advice`]: what the end of a connection means for reconnecting; the client's close codes.
//! - [`token`]: token sources and renewal before expiry.
//! - `tls`: the rustls configuration of `wss://` connections, from the builder's roots.
//! - [`frame`]: the shared wire format (`switchboard_core::frame`) as this
//!   client holds it: owned strings, parsed values; its request frames.
//! - [`event`]: the client's [`State`] and [`ClientEvent`]s.
//! - [`error`]: [`ClientError`], what can go wrong for a caller.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! use switchboard_client::{Client, SubscriptionEvent};
//!
//! let client = Client::builder("ws://127.0.0.1:8000/ws").connect();
//! let mut sub = client.subscribe("chat:lobby").await?;
//! client.publish("chat:lobby", serde_json::json!({"text": "hi"})).await?;
//! while let Some(event) = sub.next().await {
//!     match event {
//!         SubscriptionEvent::Subscribed(s) if s.was_recovering && !s.recovered => {
//!             // Continuity lost (e.g. the server restarted): reload state.
//!         }
//!         SubscriptionEvent::Message(p) => println!("{}: {}", p.from, p.data),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! `wss://` URLs use rustls; the server's certificate must chain to
//! Mozilla's roots or to one added with
//! [`ClientBuilder::add_root_certificate`].

pub mod advice;
pub mod backoff;
pub mod client;
mod connection;
pub mod error;
pub mod event;
pub mod frame;
mod options;
mod request;
pub mod subscription;
mod tls;
pub mod token;

pub use advice::close_code;
pub use backoff::BackoffConfig;
pub use client::{Client, ClientBuilder, Subscription};
pub use error::ClientError;
pub use event::{ClientEvent, State};
pub use frame::{ClientInfo, History, HistoryOptions, Position, PresenceStats, Publication};
pub use rustls_pki_types::{CertificateDer, pem::PemObject};
pub use subscription::{SubscribeOptions, Subscribed, SubscriptionEvent};
