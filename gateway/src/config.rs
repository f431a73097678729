//! Gateway configuration: authentication, limits and channel options.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

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
    /// TLS on the client port and the API port (`[gateway.tls]`); none:
    /// plaintext, for a TLS-terminating proxy or a private network.
    pub tls: Option<EdgeTlsConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            name: "gateway-1".into(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The certificate and key of the public listeners (`[gateway.tls]`,
/// docs/operations.md#tls), re-read when the files change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeTlsConfig {
    /// PEM certificate chain of the client port, leaf first.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// The API port's own chain, when `api.listen` gives it a port;
    /// without it the API port presents `cert`.
    pub api_cert: Option<PathBuf>,
    /// The key of `api_cert`.
    pub api_key: Option<PathBuf>,
    /// How often the files are checked for a change.
    #[serde(
        with = "humantime_serde",
        default = "EdgeTlsConfig::default_reload_every"
    )]
    pub reload_every: Duration,
}

impl EdgeTlsConfig {
    /// `cert` and `key` on both ports, checked every 5 s.
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            api_cert: None,
            api_key: None,
            reload_every: Self::default_reload_every(),
        }
    }

    fn default_reload_every() -> Duration {
        Duration::from_secs(5)
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Let clients without a token connect, subscribe and publish, as
    /// namespace options allow.
    pub allow_anonymous: bool,
    /// Shared secret for HS256 tokens (a key without `kid`).
    pub hmac_secret: Option<String>,
    /// RSA public key for RS256 tokens (a key without `kid`): PEM text, or
    /// a path to a PEM file.
    pub rsa_public_key: Option<String>,
    /// EC P-256 public key for ES256 tokens (a key without `kid`): PEM
    /// text, or a path to a PEM file.
    pub ec_public_key: Option<String>,
    /// Keys with a `kid`, several per algorithm, for rotation with overlap.
    pub keys: Vec<KeyConfig>,
    /// A JWKS document: a file path, or an `https://` URL fetched at start
    /// and every `jwks_refresh`.
    pub jwks: Option<String>,
    /// How often the JWKS is read again.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Time one JWKS fetch may take.
    #[serde(with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// Largest JWKS document, in bytes.
    pub jwks_max_bytes: usize,
    /// PEM file of the CAs that an `https://` JWKS server's certificate
    /// must chain to, instead of the built-in Mozilla roots.
    pub jwks_ca: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest lifetime a token may have: `exp - iat`, and `exp - now`.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
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
            keys: Vec::new(),
            jwks: None,
            jwks_refresh: Duration::from_secs(300),
            jwks_timeout: Duration::from_secs(10),
            jwks_max_bytes: 64 * 1024,
            jwks_ca: None,
            leeway: Duration::from_secs(5),
            max_token_lifetime: Duration::from_secs(24 * 3600),
            audience: None,
            issuer: None,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    // The HMAC secret is a secret: never in logs or panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("allow_anonymous", &self.allow_anonymous)
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "redacted"),
            )
            .field("rsa_public_key", &self.rsa_public_key.is_some())
            .field("ec_public_key", &self.ec_public_key.is_some())
            .field("keys", &self.keys)
            .field("jwks", &self.jwks)
            .field("leeway", &self.leeway)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The algorithms a key may be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// One verification key with its key id (`[[gateway.auth.keys]]`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Matched against a token's `kid` header.
    pub kid: String,
    pub alg: KeyAlgorithm,
    /// HS256: the secret. RS256, ES256: the public key, PEM text or a path
    /// to a PEM file.
    pub key: String,
}

impl std::fmt::Debug for KeyConfig {
    // An HS256 key is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections this gateway accepts; beyond it the upgrade gets HTTP 503.
    pub max_connections: usize,
    /// Channels one connection may subscribe to.
    pub max_channels_per_connection: usize,
    /// Distinct channels one connection may subscribe or publish to per
    /// `channel_quota_interval` (each channel counted once per interval),
    /// so that no client creates channels faster than they expire; beyond
    /// it the request gets error 110. 0: no limit.
    pub max_channels_per_interval: usize,
    #[serde(with = "humantime_serde")]
    pub channel_quota_interval: Duration,
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
    /// Requests one connection has read and not yet answered (running, or
    /// waiting behind an earlier request on the same channel); at the
    /// limit the connection stops reading until one is answered.
    pub max_requests_in_flight: usize,
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
    /// Sockets this gateway holds open, of every kind (WebSocket, HTTP/1,
    /// HTTP/2, server API), from accept to close; beyond it a new socket is
    /// closed at once. Keep it under the open-file limit.
    pub max_sockets: usize,
    /// Sockets one client address (an IPv6 /64) holds open; beyond it a new
    /// one gets HTTP 503 and is closed.
    pub max_sockets_per_ip: usize,
    /// New sockets per second one client address may open, sustained.
    pub connection_rate_per_ip: f64,
    /// New sockets one client address may open at once above the rate.
    pub connection_burst_per_ip: u32,
    /// An HTTP/1 or HTTP/2 connection with no request in flight this long is
    /// shut down (HTTP/2: GOAWAY). WebSockets have `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 500_000,
            max_channels_per_connection: 128,
            max_channels_per_interval: 256,
            channel_quota_interval: Duration::from_secs(60),
            max_message_bytes: 64 * 1024,
            rate_per_second: 50.0,
            rate_burst: 100,
            close_on_rate_limit: false,
            outbound_queue: 1024,
            max_requests_in_flight: 64,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_history_reply: 1000,
            max_sockets: 510_000,
            max_sockets_per_ip: 10_000,
            connection_rate_per_ip: 100.0,
            connection_burst_per_ip: 1000,
            http_idle_timeout: Duration::from_secs(30),
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
    /// Time from a request's headers to the end of its body; a body that
    /// takes longer gets 408 (gRPC: `DEADLINE_EXCEEDED`).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// API requests (HTTP and gRPC) served at once; beyond it a request
    /// gets 503 with `Retry-After` (gRPC: `UNAVAILABLE`).
    pub max_concurrent_requests: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            listen: None,
            max_body_bytes: 1024 * 1024,
            max_data_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            max_concurrent_requests: 1024,
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
            .field("body_timeout", &self.body_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
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
