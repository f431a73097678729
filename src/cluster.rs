//! The cluster roles: `switchboard node` (a broker) and `switchboard
//! gateway`, each a process of its own.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{Router as Http, http::StatusCode, response::IntoResponse, routing::get};
use std::time::Duration;

use switchboard_cluster::{
    dialer::{SharedDialer, TcpDialer, TcpTransport},
    gossip::{CONFLICT_GRACE, Membership},
    membership::{IdentityConflict, NodeId, NodeState, Role},
    proof::{Prover, proven_view},
    tls::{TlsContext, TlsDialer, TlsIncoming},
};
use switchboard_core::{BrokerAddr, host::Host};
use switchboard_gateway::Router;
use switchboard_node::process::{BrokerListeners, BrokerProcess, BrokerSettings};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    security::{GossipSecurity, Refusal, SecurityArgs},
};

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

/// Over mutual TLS, how this process proves a broker's claim to its name
/// before counting it in the ring.
fn prover(tls: Option<&Arc<TlsContext>>) -> Option<Prover> {
    let dialer = TlsDialer::over(TcpTransport, tls?.clone());
    Some(Arc::new(move |broker: &BrokerAddr| dialer.proves(broker)))
}

/// Checks the names of statically given brokers, which their certificates
/// must prove.
fn check_broker_names(brokers: &[BrokerAddr]) -> Result<(), Refusal> {
    for b in brokers {
        switchboard_cluster::tls::identity::validate_name(b.name.as_str())
            .map_err(|e| Refusal::Tls(format!("--broker {}: {e}", b.name)))?;
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

/// `switchboard node`'s command line.
pub(crate) struct Node {
    pub name: String,
    pub grpc: SocketAddr,
    pub advertise: Option<String>,
    pub http: SocketAddr,
    pub gossip: Gossip,
    pub security: SecurityArgs,
}

/// `switchboard gateway`'s command line.
pub(crate) struct Gateway {
    pub name: String,
    pub listen: SocketAddr,
    pub brokers: Vec<BrokerAddr>,
    pub gossip: Gossip,
    pub security: SecurityArgs,
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
    let credentials = security.with_file(&config.cluster_security).resolve(true)?;
    // Metrics first: loading credentials exports the certificate's serial.
    switchboard_gateway::telemetry::recorder();
    let tls = credentials.tls.load(&name, Role::Broker)?;
    let tracker = TaskTracker::new();
    let keys_stop = CancellationToken::new();
    let gossip_sealer = credentials
        .gossip
        .and_then(|gossip| gossip.start(&tracker, keys_stop.clone()));
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
        gossip_sealer,
        prover: prover(tls.as_ref()),
        webhooks: config.pusher.webhook_config(),
    };
    let process = start_broker(tls.as_ref(), grpc, gossip_socket, settings, signal)?;
    if let Some(context) = &tls {
        context.watch(&tracker, process.stopping());
    }
    tracker.spawn({
        let stopping = process.stopping();
        async move {
            stopping.cancelled().await;
            keys_stop.cancel();
        }
    });
    serve_ops(&tracker, http, process.stopping());
    tracing::info!(
        node = %name,
        "switchboard node {name}: grpc://{grpc_addr} http://{http_addr} gossip://{}",
        process.gossip_addr()
    );
    let stopped = process.run().await;
    tracker.close();
    tracker.wait().await;
    match stopped.conflict {
        Some(conflict) => Err(Refusal::Conflict(conflict).into()),
        None => Ok(()),
    }
}

/// A broker's HTTP port (metrics, health) and the metrics' upkeep, in
/// `tracker`, until `stopping`.
fn serve_ops(tracker: &TaskTracker, http: TcpListener, stopping: CancellationToken) {
    tracker.spawn(switchboard_gateway::telemetry::upkeep(
        switchboard_gateway::telemetry::recorder(),
        stopping.clone(),
    ));
    tracker.spawn(async move {
        let app = ops_routes(stopping.clone());
        let serve = axum::serve(http, app).with_graceful_shutdown(stopping.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
}

/// A gateway: terminates client WebSockets and routes each channel to its
/// owner, with brokers either given (`--broker`) or found by gossip.
pub(crate) async fn run_gateway(
    config: Config,
    gateway: Gateway,
    signal: CancellationToken,
) -> anyhow::Result<()> {
    let Gateway {
        name,
        listen,
        brokers,
        gossip,
        security,
    } = gateway;
    anyhow::ensure!(
        !brokers.is_empty() || !gossip.seeds.is_empty(),
        "a gateway needs --seed HOST:PORT (gossip) or --broker NAME=HOST:PORT (static)"
    );
    // A static gateway does not gossip, and needs no gossip key.
    let credentials = security
        .with_file(&config.cluster_security)
        .resolve(brokers.is_empty())?;
    switchboard_gateway::telemetry::recorder();
    let tls = credentials.tls.load(&name, Role::Gateway)?;
    check_broker_names(&brokers)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    // The signal, or a conflict over this gateway's name, stops it.
    let shutdown = signal.child_token();
    let tracker = TaskTracker::new();
    if let Some(context) = &tls {
        context.watch(&tracker, shutdown.clone());
    }
    let mut conflict = None;
    let dialer = dialer(tls.as_ref());
    let router = if let Some(gossip_security) = credentials.gossip {
        let gossiping = (gossip, gossip_security, dialer, prover(tls.as_ref()));
        let (router, watch) = gossip_router(&name, gossiping, &tracker, &shutdown).await?;
        conflict = Some(watch);
        router
    } else {
        Router::with_dialer(&brokers, dialer, shutdown.clone(), tracker.clone())?
    };
    // The server API rides on the client port unless the config gives it
    // an address of its own.
    let api = bind_api(config.api.listen).await?;
    let mut settings = config.gateway_settings();
    settings.gateway.name = name.clone();
    let drain_timeout = settings.gateway.drain_timeout;
    let ws = crate::edge_tls::ws_scheme(&settings.gateway);
    tracing::info!(gateway = %name, "switchboard gateway {name}: {ws}://{local}/ws");
    let listeners = switchboard_gateway::Listeners {
        client: listener,
        api,
    };
    let served = switchboard_gateway::run_with(listeners, settings, router, shutdown.clone()).await;
    // An early error leaves the token as it was: end the tasks either way.
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("router and gossip tasks still running after the drain deadline");
    }
    served?;
    match conflict {
        Some(watch) => match watch.await? {
            Some(conflict) => Err(Refusal::Conflict(conflict).into()),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// The server API's own listener, if it has an address.
async fn bind_api(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the API address {addr}"))?;
    Ok(Some(listener))
}

/// How long a gossiping gateway waits, once among others, for news of
/// another live gateway with its name before it attaches to brokers.
const NAME_SETTLES: Duration = Duration::from_secs(1);

/// A gateway's router following gossip, and the task that stops the
/// gateway (cancelling `shutdown`) if its name is held by another live
/// member, resolving to that conflict.
async fn gossip_router(
    name: &str,
    (gossip, security, dialer, prover): (Gossip, GossipSecurity, SharedDialer, Option<Prover>),
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Router, JoinHandle<Option<IdentityConflict>>)> {
    let sealer = security.start(tracker, shutdown.clone());
    let me = node_id(name, Role::Gateway, String::new(), NodeState::Active);
    let gossip_addr = gossip.bind_addr().await?;
    let socket = tokio::net::UdpSocket::bind(gossip_addr)
        .await
        .with_context(|| format!("binding gossip {gossip_addr}"))?;
    // foca's random choices: any seed will do outside a simulation.
    let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), boot_id());
    let membership = Membership::start_in(
        tracker,
        me,
        socket,
        gossip.seeds,
        seed,
        sealer,
        shutdown.clone(),
    )?;
    let conflict = tracker.spawn({
        let (membership, shutdown) = (membership.clone(), shutdown.clone());
        async move {
            tokio::select! {
                () = shutdown.cancelled() => None,
                conflict = membership.identity_conflict(CONFLICT_GRACE) => {
                    shutdown.cancel();
                    Some(conflict)
                }
            }
        }
    });
    // A gateway attaches to brokers under its name: a second gateway with
    // a live gateway's name would take over its streams. So it routes only
    // once it has been in the cluster a while without finding its name
    // held elsewhere (the first news of the others usually carries them
    // all).
    let mut view = membership.vetted_view(tracker, NAME_SETTLES, shutdown.clone());
    if let Some(prove) = prover {
        view = proven_view(view, prove, tracker, shutdown.clone());
    }
    // Route once some broker is known (bounded: a gateway that finds
    // none still starts, and answers with errors until one joins).
    let _ = tokio::time::timeout(
        NAME_SETTLES + Duration::from_secs(2),
        view.wait_for(|v| !v.active_brokers().is_empty()),
    )
    .await;
    Ok((
        Router::following_with(
            view,
            dialer,
            Host::system(),
            shutdown.clone(),
            tracker.clone(),
        )?,
        conflict,
    ))
}
