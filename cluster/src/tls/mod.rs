//! Mutual TLS between the cluster's nodes: every gRPC connection from a
//! gateway or broker to a broker proves both ends' identities with
//! certificates from the cluster's CA.
//!
//! - [`identity`]: the identity SAN `NAME.ROLE.switchboard` (sans-IO).
//! - [`authority`]: the CA: `switchboard ca init|issue` and the tests.
//! - [`credentials`]: CA, certificate and key files into rustls configurations.
//! - [`context`]: [`TlsContext`], the current credentials, reloaded when the files change.
//! - [`acceptor`]: [`TlsIncoming`], a broker's connections after the handshake,
//!   each carrying the [`TlsPeer`] it proved.
//! - [`connector`]: [`TlsDialer`], a [`crate::dialer::Dialer`] over TLS.

pub mod acceptor;
pub mod authority;
pub mod connector;
pub mod context;
pub mod credentials;
pub mod identity;

pub use acceptor::{TlsIncoming, TlsPeer};
pub use connector::TlsDialer;
pub use context::TlsContext;
pub use credentials::{TlsError, TlsFiles};
pub use identity::PeerIdentity;
