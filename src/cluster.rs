//! The cluster roles: `switchboard node` (a broker) and `switchboard
//! gateway`, each a process of its own.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{Router as Http, http::StatusCode, response::IntoResponse, routing::get};
use std::time::Duration;

use switchboard_cluster::{
    dialer::{SharedDialer, TcpDialer},
    gossip::Membership,
    membership::{NodeId, NodeState, Role},
    tls::{TlsContext, TlsDialer, TlsIncoming},
};
use switchboard_core::{BrokerAddr, host::Host};
use switchboard_gateway::Router;
use switchboard_node::process::{BrokerListeners, BrokerProcess, BrokerSettings};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{StartRefused, config::Config, security::TlsSecurity};

/// Parses `name=host:port`.
pub(crate) fn parse_broker(s: &str) -> Result<BrokerAddr, String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT, got {s:?}"))?;
    if name.is_empty() || addr.is_empty() {
        return Err(format!("expected NAME=HOST:PORT, got {s:?}"));
    }
    Ok(BrokerAddr {
        name: name.into(),
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

/// How a process finds the others.
pub(crate) struct Gossip {
    /// UDP address to gossip on, `host:port` (a DNS name allowed).
    pub bind: String,
    /// `host:port` of other members (DNS names allowed).
    pub seeds: Vec<String>,
}

impl Gossip {
    /// The address to bind. Members announce the address they bind, so it
    /// must be one the others can reach: a wildcard is refused. A name is
    /// resolved here, once, which lets a container bind its own hostname
    /// without knowing its IP in advance.
    async fn bind_addr(&self) -> anyhow::Result<SocketAddr> {
        let addr = tokio::net::lookup_host(self.bind.as_str())
            .await
            .with_context(|| format!("resolving the gossip address {}", self.bind))?
            .next()
            .with_context(|| format!("the gossip address {} resolves to nothing", self.bind))?;
        anyhow::ensure!(
            !addr.ip().is_unspecified(),
            "the gossip address {} is a wildcard, but it is also the address announced to \
             the others: give this host's reachable address or name (e.g. $(POD_IP):7946, \
             or the container's hostname)",
            self.bind
        );
        Ok(addr)
    }
}

fn node_id(name: &str, role: Role, grpc: String, state: NodeState) -> NodeId {
    NodeId {
        name: name.to_owned(),
        role,
        gossip: "0.0.0.0:0".parse().expect("valid"),
        grpc,
        state,
        boot: boot_id(),
        bump: 0,
    }
}

/// This process' boot id: its start time in nanoseconds. foca settles two
/// identities on one gossip address by `(boot, bump)`, so a node restarted
/// on the address it had (a container or pod keeping its IP) must carry a
/// larger boot id than its old, down self; a random one lost half the time,
/// and the restarted node stayed out until the old identity expired (30 s).
fn boot_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// How this process dials brokers: over TLS with its credentials, or
/// plain TCP when insecure.
fn dialer(tls: Option<&Arc<TlsContext>>) -> SharedDialer {
    match tls {
        Some(context) => TlsDialer::shared(context.clone()),
        None => TcpDialer::shared(),
    }
}

/// Checks the names of statically given brokers, which their certificates
/// must prove.
fn check_broker_names(brokers: &[BrokerAddr]) -> Result<(), StartRefused> {
    for b in brokers {
        switchboard_cluster::tls::identity::validate_name(b.name.as_str())
            .map_err(|e| StartRefused(format!("--broker {}: {e}", b.name)))?;
    }
    Ok(())
}

/// Starts the broker on its sockets: the gRPC listener behind TLS when
/// there are credentials.
fn start_broker(
    tls: Option<&Arc<TlsContext>>,
    grpc: TcpListener,
    gossip: tokio::net::UdpSocket,
    settings: BrokerSettings,
    signal: CancellationToken,
) -> std::io::Result<BrokerProcess> {
    let incoming = switchboard_node::server::incoming(grpc);
    match tls {
        Some(context) => {
            let grpc = TlsIncoming::new(incoming, context.clone());
            BrokerProcess::start(BrokerListeners { grpc, gossip }, settings, signal)
        }
        None => BrokerProcess::start(
            BrokerListeners {
                grpc: incoming,
                gossip,
            },
            settings,
            signal,
        ),
    }
}

/// `switchboard node`'s flags.
pub(crate) struct Node {
    pub name: String,
    pub grpc: SocketAddr,
    pub advertise: Option<String>,
    pub http: SocketAddr,
    pub gossip: Gossip,
    pub security: TlsSecurity,
}

/// A broker: owns channels and serves gateways over gRPC. The process
/// shape and its drain are [`BrokerProcess`]'s; this binds the sockets and
/// adds the HTTP port (metrics, health).
pub(crate) async fn run_node(
    config: Config,
    node: Node,
    signal: CancellationToken,
) -> anyhow::Result<()> {
    let Node {
        name,
        grpc,
        advertise,
        http,
        gossip,
        security,
    } = node;
    // Metrics first: loading credentials exports the certificate's serial.
    switchboard_gateway::telemetry::recorder();
    let tls = security.load(&name, Role::Broker)?;
    let grpc = TcpListener::bind(grpc)
        .await
        .with_context(|| format!("binding gRPC {grpc}"))?;
    let http = TcpListener::bind(http)
        .await
        .with_context(|| format!("binding HTTP {http}"))?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let gossip_addr = gossip.bind_addr().await?;
    let gossip_socket = tokio::net::UdpSocket::bind(gossip_addr)
        .await
        .with_context(|| format!("binding gossip {gossip_addr}"))?;
    // The node's name is what the cluster knows it by, whatever the file says.
    let mut broker = config.broker.clone();
    broker.name = name.clone();
    let settings = BrokerSettings {
        broker,
        namespaces: config.namespaces(),
        advertise: advertise.unwrap_or_else(|| grpc_addr.to_string()),
        seeds: gossip.seeds,
        boot: boot_id(),
        host: Host::system(),
        dialer: dialer(tls.as_ref()),
    };
    let process = start_broker(tls.as_ref(), grpc, gossip_socket, settings, signal)?;
    let tracker = TaskTracker::new();
    if let Some(context) = &tls {
        context.watch(&tracker, process.stopping());
    }
    tracker.spawn(switchboard_gateway::telemetry::upkeep(
        switchboard_gateway::telemetry::recorder(),
        process.stopping(),
    ));
    tracker.spawn({
        let app = ops_routes(process.stopping());
        let stopping = process.stopping();
        async move {
            let serve = axum::serve(http, app).with_graceful_shutdown(stopping.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }
    });
    tracing::info!(
        node = %name,
        "switchboard node {name}: grpc://{grpc_addr} http://{http_addr} gossip://{}",
        process.gossip_addr()
    );
    process.run().await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// `switchboard gateway`'s flags.
pub(crate) struct GatewayRole {
    pub name: String,
    pub listen: SocketAddr,
    pub brokers: Vec<BrokerAddr>,
    pub gossip: Gossip,
    pub security: TlsSecurity,
}

/// A gateway: terminates client WebSockets and routes each channel to its
/// owner, with brokers either given (`--broker`) or found by gossip.
pub(crate) async fn run_gateway(
    config: Config,
    gateway: GatewayRole,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let GatewayRole {
        name,
        listen,
        brokers,
        gossip,
        security,
    } = gateway;
    switchboard_gateway::telemetry::recorder();
    let tls = security.load(&name, Role::Gateway)?;
    check_broker_names(&brokers)?;
    let tracker = TaskTracker::new();
    if let Some(context) = &tls {
        context.watch(&tracker, shutdown.clone());
    }
    anyhow::ensure!(
        !brokers.is_empty() || !gossip.seeds.is_empty(),
        "a gateway needs --seed HOST:PORT (gossip) or --broker NAME=HOST:PORT (static)"
    );
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    let router = if brokers.is_empty() {
        let me = node_id(&name, Role::Gateway, String::new(), NodeState::Active);
        let gossip_addr = gossip.bind_addr().await?;
        let membership = Membership::start(me, gossip_addr, gossip.seeds, shutdown.clone())
            .await
            .with_context(|| format!("binding gossip {gossip_addr}"))?;
        let mut view = membership.view();
        // Route once some broker is known (bounded: a gateway that finds
        // none still starts, and answers with errors until one joins).
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            view.wait_for(|v| !v.active_brokers().is_empty()),
        )
        .await;
        Router::following_with(
            membership.view(),
            dialer(tls.as_ref()),
            Host::system(),
            shutdown.clone(),
        )?
    } else {
        Router::with_dialer(&brokers, dialer(tls.as_ref()), shutdown.clone())?
    };
    // The server API rides on the client port unless the config gives it
    // an address of its own.
    let api = match config.api.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the API address {addr}"))?,
        ),
        None => None,
    };
    let mut settings = config.gateway_settings();
    settings.gateway.name = name.clone();
    tracing::info!(gateway = %name, "switchboard gateway {name}: ws://{local}/ws");
    let listeners = switchboard_gateway::Listeners {
        client: listener,
        api,
    };
    let served = switchboard_gateway::run_with(listeners, settings, router, shutdown.clone()).await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    served?;
    Ok(())
}
