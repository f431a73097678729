//! Gateway configuration: authentication, limits and channel options.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};
use switchboard_core::Namespaces;

pub mod pusher;

pub use pusher::{PusherApp, PusherConfig, PusherConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's name, unique in a cluster.
    pub name: String,
    pub auth: AuthConfig,
    pub limits: Limits,
    /// How long a shutdown waits for connections to close.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            name: "gateway-1".into(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Let clients without a token connect, subscribe and publish, as
    /// namespace options allow.
    pub allow_anonymous: bool,
    /// Shared secret for HS256 tokens.
    pub hmac_secret: Option<String>,
    /// RSA public key for RS256 tokens: PEM text, or a path to a PEM file.
    pub rsa_public_key: Option<String>,
    /// EC P-256 public key for ES256 tokens: PEM text, or a path to a PEM file.
    pub ec_public_key: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// If set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// If set, tokens must carry this `iss`.
    pub issuer: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: false,
            hmac_secret: None,
            rsa_public_key: None,
            ec_public_key: None,
            leeway: Duration::from_secs(5),
            audience: None,
            issuer: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections this gateway accepts; beyond it the upgrade gets HTTP 503.
    pub max_connections: usize,
    /// Channels one connection may subscribe to.
    pub max_channels_per_connection: usize,
    /// Largest incoming WebSocket message, in bytes.
    pub max_message_bytes: usize,
    /// Sustained incoming frames per second per connection.
    pub rate_per_second: f64,
    /// Frames a connection may send in a burst above the rate.
    pub rate_burst: u32,
    /// Close the connection (4008) when it exceeds the rate, instead of
    /// answering each extra frame with an error.
    pub close_on_rate_limit: bool,
    /// Frames queued for one connection; a client that falls further behind
    /// is disconnected as a slow consumer (4005).
    pub outbound_queue: usize,
    /// Time from TCP accept to a complete WebSocket handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time a connection without a token has to send `auth`.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// How often the server pings an idle connection.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) this long is dropped.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection whose socket accepts no bytes this long is dropped.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Most publications one history or recovery reply carries.
    pub max_history_reply: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 500_000,
            max_channels_per_connection: 128,
            max_message_bytes: 64 * 1024,
            rate_per_second: 50.0,
            rate_burst: 100,
            close_on_rate_limit: false,
            outbound_queue: 1024,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_history_reply: 1000,
        }
    }
}

/// The server API for application backends (`[api]`, docs/api.md).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Keys accepted in `Authorization: apikey <key>`. Several, so that a
    /// new one can be rolled out before the old one is removed. None: every
    /// call is refused.
    pub keys: Vec<String>,
    /// Serve the API (HTTP and gRPC) on this address instead of the client
    /// port, so that it need not be exposed with it.
    pub listen: Option<SocketAddr>,
    /// Largest request body (HTTP) or message (gRPC), in bytes.
    pub max_body_bytes: usize,
    /// Largest `data` of one publication, in bytes of JSON text.
    pub max_data_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            listen: None,
            max_body_bytes: 1024 * 1024,
            max_data_bytes: 64 * 1024,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    // Keys are secrets: never in logs or panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("listen", &self.listen)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_data_bytes", &self.max_data_bytes)
            .finish()
    }
}

/// Everything a gateway needs: its own settings, the server API's, the
/// Pusher door's and the channel options.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub gateway: GatewayConfig,
    pub namespaces: Namespaces,
    pub api: ApiConfig,
    pub pusher: PusherConfig,
}
