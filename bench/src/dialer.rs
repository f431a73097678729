//! Opening the tool's WebSockets: each from its own 127.0.0.x source
//! address (one address pair has only about 28k ephemeral ports), with a
//! token of its own when the plan has a secret.

use std::{
    error::Error,
    fmt::Write,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

#[cfg(target_os = "linux")]
use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use switchboard_gateway::auth::TokenIssuer;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{
        self,
        client::IntoClientRequest,
        http::{HeaderValue, header::SEC_WEBSOCKET_PROTOCOL},
        protocol::WebSocketConfig,
    },
};

pub type Ws = WebSocketStream<TcpStream>;

/// How long the tool's tokens live: longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(transparent)]
    Socket(#[from] io::Error),
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    SocketOption(#[from] nix::errno::Errno),
    #[error("binding source address {address}")]
    Bind {
        address: Ipv4Addr,
        #[source]
        error: io::Error,
    },
    #[error("connecting from {from} to {to}")]
    Connect {
        from: Ipv4Addr,
        to: SocketAddr,
        #[source]
        error: io::Error,
    },
    #[error("WebSocket handshake")]
    Handshake(#[source] tungstenite::Error),
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
}

impl DialError {
    /// The error and its causes on one line, each after a colon.
    pub fn chain(&self) -> String {
        let mut line = self.to_string();
        let mut cause = self.source();
        while let Some(c) = cause {
            let _ = write!(line, ": {c}");
            cause = c.source();
        }
        line
    }
}

pub struct Dialer {
    server: SocketAddr,
    url: String,
    sources: Vec<Ipv4Addr>,
    issuer: Option<TokenIssuer>,
    /// Offer `switchboard.batch`.
    batch: bool,
}

impl Dialer {
    pub fn new(
        server: SocketAddr,
        url: String,
        sources: Vec<Ipv4Addr>,
        secret: Option<&str>,
        batch: bool,
    ) -> Self {
        Self {
            server,
            url,
            sources,
            issuer: secret.map(TokenIssuer::hmac),
            batch,
        }
    }

    /// The source address of connection `n`: round robin over the sources.
    pub fn source(&self, n: usize) -> Ipv4Addr {
        self.sources[n % self.sources.len()]
    }

    /// Opens connection `n` (user `bench-n` when tokens are signed).
    pub async fn dial(&self, n: usize) -> Result<Ws, DialError> {
        let socket = TcpSocket::new_v4()?;
        // Choose the port at connect time, from the whole 4-tuple: a bind
        // to port 0 would search for a port free for every destination,
        // which gets slow (in the kernel) with thousands bound already.
        #[cfg(target_os = "linux")]
        setsockopt(&socket, IpBindAddressNoPort, &true)?;
        let source = self.source(n);
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|error| DialError::Bind {
                address: source,
                error,
            })?;
        let stream = socket
            .connect(self.server)
            .await
            .map_err(|error| DialError::Connect {
                from: source,
                to: self.server,
                error,
            })?;
        stream.set_nodelay(true)?;
        let url = match &self.issuer {
            Some(issuer) => {
                let token = issuer.issue(&format!("bench-{n}"), TOKEN_TTL, None);
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}token={token}", self.url)
            }
            None => self.url.clone(),
        };
        let mut request = url.into_client_request().map_err(DialError::Handshake)?;
        if self.batch {
            request.headers_mut().insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("switchboard.batch"),
            );
        }
        let (ws, _) = client_async_with_config(request, stream, Some(config()))
            .await
            .map_err(DialError::Handshake)?;
        Ok(ws)
    }
}

/// Small buffers: the tool holds tens of thousands of connections, and
/// tungstenite's defaults (128 KiB to read) would cost gigabytes.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}
