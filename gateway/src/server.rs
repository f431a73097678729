//! The gateway server: accepts TCP connections, serves HTTP (`/ws`,
//! `/metrics`, `/healthz`, `/readyz`, the demo at `/`, the server API under
//! `/api/` and its gRPC twin) on them, upgrades `/ws` to WebSocket
//! connections, and drains them all on shutdown.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::get,
};
use http::{StatusCode, header};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use switchboard_core::{Broker, BrokerError};
use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::protocol::Role};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::{
    api::{self, ApiKeyError},
    auth::{AuthSetupError, Authenticator},
    config::Settings,
    connection, demo,
    edge_tls::{self, EdgeTls, EdgeTlsError, ListenerTls},
    first_bytes::FirstBytesDeadline,
    gateway::{Gateway, Parts},
    handshake,
    hub::Hub,
    idle_watch::{IdleWatch, Verdict},
    outbox::Framing,
    refusal::{self, Limit},
    socket_budget::{Permitted, SocketBudget},
    telemetry,
};

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("auth configuration: {0}")]
    Auth(#[from] AuthSetupError),
    #[error("api configuration: {0}")]
    Api(#[from] ApiKeyError),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("pusher configuration: {0}")]
    Pusher(#[from] crate::pusher::PusherConfigError),
    #[error("edge TLS: {0}")]
    EdgeTls(#[from] EdgeTlsError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a gateway serves.
pub struct Listeners {
    /// Clients: `/ws`, health and metrics; also the server API unless `api`
    /// is given.
    pub client: TcpListener,
    /// The server API (HTTP `/api/` and gRPC) alone, so that it need not be
    /// exposed with the client port.
    pub api: Option<TcpListener>,
}

/// The first bytes of an HTTP/2 connection (its preface): enough to tell
/// HTTP/2 from HTTP/1.
const H2_PREFACE_LEN: usize = 24;

/// Serves clients on `listener` until `shutdown`, then drains. The server
/// API is served on the same listener.
pub async fn run<B: Broker>(
    listener: TcpListener,
    settings: Settings,
    broker: B,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let listeners = Listeners {
        client: listener,
        api: None,
    };
    run_with(listeners, settings, broker, shutdown).await
}

/// Serves clients, and the server API where `listeners` say, until
/// `shutdown`, then drains.
pub async fn run_with<B: Broker>(
    listeners: Listeners,
    settings: Settings,
    broker: B,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let auth = Authenticator::new(&settings.gateway.auth)?;
    settings.pusher.validate()?;
    let (client_tls, api_tls) = EdgeTls::from_config(settings.gateway.tls.as_ref())?;
    let hub = Arc::new(Hub::new(settings.gateway.name.as_str().into()));
    broker.attach(hub.gateway().clone(), hub.clone()).await?;
    let metrics = telemetry::recorder();
    let tracker = TaskTracker::new();
    tracker.spawn(telemetry::upkeep(metrics.clone(), shutdown.clone()));
    for tls in client_tls.iter().chain(&api_tls) {
        tls.watch(&tracker, shutdown.clone());
    }
    keep_keys_fresh(&auth, &tracker, &shutdown).await;
    refusal::register();
    let drain_timeout = settings.gateway.drain_timeout;
    let limits = &settings.gateway.limits;
    // One budget for both listeners: they share the file descriptors.
    let sockets = SocketLimits {
        budget: Arc::new(SocketBudget::new(limits.into())),
        handshake_timeout: limits.handshake_timeout,
        http_idle_timeout: limits.http_idle_timeout,
        http2_ping_interval: limits.ping_interval,
        http2_ping_timeout: limits.write_timeout,
    };
    let parts = Parts {
        hub,
        auth,
        metrics,
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    };
    let gateway = Arc::new(Gateway::new(settings, broker, parts));
    let tls = (client_tls, api_tls);
    serve(listeners, tls, &gateway, &tracker, &shutdown, &sockets).await?;

    gateway.start_draining();
    tracing::info!(connections = gateway.connections(), "gateway draining");
    tracker.close();
    if tokio::time::timeout(drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = gateway.connections(),
            "drain deadline passed; closing the rest"
        );
    }
    if let Err(e) = gateway.broker.detach(gateway.hub.gateway()).await {
        tracing::warn!(error = %e, "detach from broker failed");
    }
    Ok(())
}

/// Serves the client listener, and the API's if it has one, until
/// `shutdown`.
async fn serve<B: Broker>(
    listeners: Listeners,
    (client_tls, api_tls): (ListenerTls, ListenerTls),
    gateway: &Arc<Gateway<B>>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    sockets: &SocketLimits,
) -> Result<(), GatewayError> {
    let api_routes = api::router(gateway.clone())?;
    let client = listeners.client;
    tracing::info!(addr = %client.local_addr()?, gateway = %gateway.hub.gateway(), tls = client_tls.is_some(), "gateway listening");
    match listeners.api {
        None => {
            let app = router(gateway.clone()).merge(api_routes);
            accept(client, app, client_tls, tracker, shutdown, sockets).await;
        }
        Some(api_listener) => {
            tracing::info!(addr = %api_listener.local_addr()?, tls = api_tls.is_some(), "server API listening");
            tokio::join!(
                accept(
                    client,
                    router(gateway.clone()),
                    client_tls,
                    tracker,
                    shutdown,
                    sockets
                ),
                accept(
                    api_listener,
                    api_routes,
                    api_tls,
                    tracker,
                    shutdown,
                    sockets
                ),
            );
        }
    }
    Ok(())
}

/// Reads the JWKS, if tokens are checked against one, before serving, so
/// that a ready gateway holds its keys; a failure is retried while serving.
async fn keep_keys_fresh(
    auth: &Authenticator,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    if let Some(jwks) = auth.jwks() {
        let loaded = jwks.load_logged().await;
        tracker.spawn(jwks.clone().keep_fresh(loaded, shutdown.clone()));
    }
}

/// What bounds the sockets of both listeners (docs/security.md).
struct SocketLimits {
    budget: Arc<SocketBudget>,
    handshake_timeout: Duration,
    http_idle_timeout: Duration,
    http2_ping_interval: Duration,
    http2_ping_timeout: Duration,
}

/// The answer to a socket a per-address limit refuses, written without
/// waiting (a socket buffer takes it whole) and without reading the request.
const REFUSED_PER_IP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain\r\nContent-Length: 35\r\nConnection: close\r\n\r\n\
too many connections from your IP\r\n";

/// Accepts connections and serves `app` on each (HTTP/1.1 with upgrades, or
/// HTTP/2 for gRPC) until `shutdown`; then closes the listener and shuts
/// the connections down gracefully. With `tls`, each connection is a TLS
/// one, its handshake within `handshake_timeout`.
async fn accept(
    listener: TcpListener,
    app: Router,
    tls: ListenerTls,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    limits: &SocketLimits,
) {
    let handshake_timeout = limits.handshake_timeout;
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_ping_interval)
        .keep_alive_timeout(limits.http2_ping_timeout);
    let http = Arc::new(http);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin, and keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match limits.budget.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(limit) => {
                refusal::record(limit);
                if limit != Limit::Sockets {
                    let _ = stream.try_write(REFUSED_PER_IP);
                }
                // Dropped: closed at once, so that the budget bounds the
                // file descriptors held.
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let conn = Connection {
            http: http.clone(),
            app: app.clone(),
            shutdown: shutdown.clone(),
            idle_timeout: limits.http_idle_timeout,
            grace: handshake_timeout,
        };
        tracker.spawn(async move {
            // The permit is held through the TLS handshake as well.
            let Some(stream) = edge_tls::accept(tls.as_deref(), stream, handshake_timeout).await
            else {
                return;
            };
            let stream = Permitted::new(stream, permit);
            let io = FirstBytesDeadline::new(stream, H2_PREFACE_LEN, handshake_timeout);
            conn.serve(io).await;
        });
    }
    drop(listener);
}

/// What serves one accepted socket.
struct Connection {
    http: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    shutdown: CancellationToken,
    idle_timeout: Duration,
    /// How long an idle connection's graceful shutdown may take.
    grace: Duration,
}

impl Connection {
    /// Serves HTTP on `io` until the peer closes, the connection is idle
    /// for `idle_timeout` (then shut down gracefully within `grace`), or
    /// `shutdown` (then shut down gracefully; the drain bounds it).
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let watch = Arc::new(IdleWatch::new(Instant::now()));
        let requests = watch.clone();
        let service =
            ServiceExt::<Request<hyper::body::Incoming>>::map_future(self.app, move |response| {
                let in_flight = requests.begin();
                async move {
                    let response = response.await;
                    drop(in_flight);
                    response
                }
            });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let conn = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let mut check = Instant::now() + self.idle_timeout;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = self.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                    return;
                }
                _ = tokio::time::sleep_until(check.into()) => {
                    match watch.verdict(Instant::now(), self.idle_timeout) {
                        Verdict::CheckAt(at) => check = at,
                        Verdict::Idle => break,
                    }
                }
            }
        }
        refusal::record(Limit::HttpIdle);
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(self.grace, conn).await;
    }
}

/// The HTTP routes of a gateway.
pub fn router<B: Broker>(gateway: Arc<Gateway<B>>) -> Router {
    Router::new()
        .route("/ws", get(upgrade::<B>))
        .route("/metrics", get(metrics::<B>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<B>))
        .with_state(gateway.clone())
        .merge(demo::router(&gateway.settings.gateway.auth))
        .merge(crate::pusher::router(gateway))
}

async fn metrics<B: Broker>(State(gw): State<Arc<Gateway<B>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.render_metrics(),
    )
        .into_response()
}

async fn readyz<B: Broker>(State(gw): State<Arc<Gateway<B>>>) -> Response {
    if gw.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    }
}

async fn upgrade<B: Broker>(State(gw): State<Arc<Gateway<B>>>, mut req: Request) -> Response {
    let accepted = match handshake::check(req.method(), req.uri(), req.headers()) {
        Ok(accepted) => accepted,
        Err(refused) => return (refused.status, format!("{}\n", refused.message)).into_response(),
    };
    if gw.shutdown().is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server is shutting down\n").into_response();
    }
    let Some(slot) = gw.admit() else {
        telemetry::error("too_many_connections", 503);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Verify a token brought in the handshake now; the verdict is sent
    // over the socket, where browsers can read it.
    let token = accepted.token.as_deref().map(|t| gw.auth.verify(t));
    let config = gw.ws_config();
    let framing = Framing::of(
        accepted.protocol,
        gw.settings.gateway.limits.max_message_bytes,
    );
    let shutdown = gw.shutdown().clone();
    let gateway = gw.clone();
    gw.tracker().spawn(async move {
        // Held until the connection ends: frees its place in the count.
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                connection::serve(gateway, ws, framing, token, shutdown).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut res = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accepted.accept_key);
    if let Some(protocol) = accepted.protocol {
        res = res.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    res.body(axum::body::Body::empty())
        .expect("static response parts are valid")
}
