//! The cluster roles: `switchboard node` (a broker) and `switchboard
//! gateway`, each a process of its own.

use std::net::SocketAddr;

use anyhow::Context;
use axum::{Router as Http, http::StatusCode, response::IntoResponse, routing::get};
use switchboard_node::{BrokerAddr, LocalBroker, Router};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::Config;

/// Parses `name=host:port`.
pub fn parse_broker(s: &str) -> Result<BrokerAddr, String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT, got {s:?}"))?;
    if name.is_empty() || addr.is_empty() {
        return Err(format!("expected NAME=HOST:PORT, got {s:?}"));
    }
    Ok(BrokerAddr {
        name: name.to_owned(),
        addr: addr.to_owned(),
    })
}

/// `/metrics`, `/healthz` and `/readyz` for a process without a client port.
fn ops_routes(ready: CancellationToken) -> Http {
    let metrics = switchboard_gateway::telemetry::recorder();
    Http::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready.is_cancelled() {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
                } else {
                    (StatusCode::OK, "ready\n").into_response()
                }
            }),
        )
}

/// A broker: owns channels and serves gateways over gRPC.
pub async fn run_node(
    config: Config,
    name: String,
    grpc: SocketAddr,
    http: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(grpc)
        .await
        .with_context(|| format!("binding gRPC {grpc}"))?;
    let http = TcpListener::bind(http)
        .await
        .with_context(|| format!("binding HTTP {http}"))?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let broker = LocalBroker::new(config.broker.clone(), config.namespaces());
    let tracker = TaskTracker::new();
    tracker.spawn({
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        async move { broker.maintain(shutdown).await }
    });
    tracker.spawn(switchboard_gateway::telemetry::upkeep(
        switchboard_gateway::telemetry::recorder(),
        shutdown.clone(),
    ));
    tracker.spawn({
        let shutdown = shutdown.clone();
        let app = ops_routes(shutdown.clone());
        async move {
            let serve = axum::serve(http, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }
    });
    tracing::info!(node = %name, "switchboard node {name}: grpc://{grpc_addr} http://{http_addr}");
    switchboard_node::server::run(grpc, broker, shutdown).await?;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// A gateway: terminates client WebSockets and routes each channel to its owner.
pub async fn run_gateway(
    config: Config,
    name: String,
    listen: SocketAddr,
    brokers: Vec<BrokerAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !brokers.is_empty(),
        "a gateway needs at least one --broker NAME=HOST:PORT"
    );
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    let router = Router::new(&brokers, shutdown.clone())?;
    let mut settings = config.gateway_settings();
    settings.gateway.name = name.clone();
    tracing::info!(gateway = %name, brokers = brokers.len(), "switchboard gateway {name}: ws://{local}/ws");
    switchboard_gateway::run(listener, settings, router, shutdown).await?;
    Ok(())
}
