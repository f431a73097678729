//! Harness for the simulation tests: our real broker and gateway code on
//! turmoil's simulated network and clock, one thread, seeded.
//!
//! - Brokers (`b1`, `b2`, ...) run the [`BrokerProcess`] that `switchboard
//!   node` runs (gRPC server, gossip, hand-over, sweeper and drain), its
//!   gRPC on turmoil TCP and gossip on turmoil UDP.
//! - Gateways run gossip and a [`Router`] that dials brokers over turmoil
//!   TCP. Every gRPC connection is mutual TLS, with certificates made for
//!   the test ([`Pki`]), through the production acceptor and dialer. The subscribing gateway (`g1`) records every delivery; the
//!   publishing one (`g2`) publishes in an open loop and records the
//!   position of every acknowledged publication.
//! - The test itself steps the simulation and injects faults (partitions,
//!   crashes, a join, a drain) at chosen simulated times.

pub(crate) mod checker;

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use checker::{Seen, Start};
use serde_json::{Value, value::RawValue};
use switchboard_cluster::{
    dialer::{SharedDialer, Transport},
    gossip::{Datagram, Membership},
    keyring::{Keyring, Sealer, SharedKeyring},
    membership::{ClusterView, NodeId, NodeState, Role},
    ring::Ring,
    tls::{PeerIdentity, TlsContext, TlsDialer, TlsFiles, TlsIncoming, authority},
};
use switchboard_core::{
    Broker, BrokerError, ChannelName, ClientInfo, Delivery, DeliveryKind, DeliverySink, GatewayId,
    Namespaces, PublishRequest, SubscribeRequest, host::Host,
};
use switchboard_gateway::Router;
use switchboard_node::{
    BrokerConfig,
    process::{BrokerListeners, BrokerProcess, BrokerSettings},
};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use turmoil::Sim;

pub(crate) const GOSSIP_PORT: u16 = 7946;
pub(crate) const GRPC_PORT: u16 = 7000;

/// How long a drain may take before the broker goes anyway (the gateway
/// config's default in production).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A simulation for one seed: network latency between 1 and 20 ms (a LAN),
/// room enough in socket buffers for a busy delivery stream.
pub(crate) fn sim<'a>(seed: u64) -> Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(seed)
        // Wall-clock reads in simulated code count from a fixed date.
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(Duration::from_secs(300))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .tcp_capacity(1 << 16)
        .udp_capacity(1 << 12)
        .build()
}

/// Mixes the simulation seed with a name, so that each node's foca draws
/// differently but reproducibly.
pub(crate) fn mix(seed: u64, name: &str, incarnation: u64) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15 ^ incarnation.rotate_left(32);
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Simulated wall clock: turmoil's, from the fixed date [`sim`] sets.
fn sim_wall() -> Duration {
    turmoil::since_epoch().expect("called inside the simulation")
}

/// What node `name` draws on in its `boot`-th run: simulated time and a
/// seed of its own.
pub(crate) fn host(shared: &Shared, name: &str, boot: u64) -> Host {
    Host::simulated(mix(shared.seed, name, boot), sim_wall)
}

/// The cluster's gossip key: gossip is sealed here as in production.
const GOSSIP_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// Seals node `name`'s gossip in its `boot`-th run, nonces drawn from its
/// host so that a seed still gives one history.
pub(crate) fn sealer(shared: &Shared, name: &str, boot: u64) -> Sealer {
    let keyring = Keyring::parse(GOSSIP_KEY).expect("the simulation's key parses");
    let nonces = host(shared, name, boot).rng("gossip nonces");
    Sealer::with_nonces(SharedKeyring::new(keyring), nonces)
}

// ---- turmoil's network behind our seams --------------------------------

/// turmoil's UDP socket as gossip's [`Datagram`]. turmoil binds only the
/// unspecified address, so the socket also carries the host's address,
/// which is what peers reach it on (and what gossip announces).
pub(crate) struct SimUdp(turmoil::net::UdpSocket, SocketAddr);

impl Datagram for SimUdp {
    fn send_to(
        &self,
        buf: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.0.send_to(buf, to)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.0.recv_from(buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.1)
    }
}

/// turmoil TCP under the production TLS dialer: brokers and gateways
/// reach brokers over mutual TLS with the production endpoint settings
/// (timeouts, keepalives), as `switchboard node` and `gateway` do.
pub(crate) struct SimTcp;

impl Transport for SimTcp {
    type Io = turmoil::net::TcpStream;

    fn connect(
        &self,
        authority: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Self::Io>> + Send + 'static>> {
        Box::pin(turmoil::net::TcpStream::connect(authority))
    }
}

pub(crate) fn dialer(tls: Arc<TlsContext>) -> SharedDialer {
    Arc::new(TlsDialer::over(SimTcp, tls))
}

/// Accepted turmoil TCP connections, through the production TLS acceptor.
fn incoming(
    listener: turmoil::net::TcpListener,
    tls: Arc<TlsContext>,
) -> TlsIncoming<
    impl futures_util::Stream<Item = io::Result<turmoil::net::TcpStream>>,
    turmoil::net::TcpStream,
> {
    let accepted = futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| s);
        Some((accepted, listener))
    });
    TlsIncoming::new(accepted, tls)
}

/// The cluster's CA and each node's credentials, made by the code behind
/// `switchboard ca` in a directory of the test's own.
pub(crate) struct Pki {
    dir: PathBuf,
    contexts: Mutex<BTreeMap<String, Arc<TlsContext>>>,
}

impl Pki {
    fn new(seed: u64) -> Self {
        // Scenarios run side by side, some on the same seed.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("switchboard-sim-{}-{seed}-{n}", std::process::id()));
        authority::init_dir(&dir, true).expect("a test CA");
        Self {
            dir,
            contexts: Mutex::default(),
        }
    }

    /// `name`'s credentials in `role`, issued on first use.
    pub(crate) fn tls(&self, name: &str, role: Role) -> Arc<TlsContext> {
        let mut contexts = self.contexts.lock().unwrap();
        contexts
            .entry(name.to_owned())
            .or_insert_with(|| {
                let [cert, key] = authority::issue_into_dir(&self.dir, name, role, &[], 1)
                    .expect("a test certificate");
                let files = TlsFiles {
                    ca: self.dir.join("ca.crt"),
                    cert,
                    key,
                };
                let me = PeerIdentity {
                    name: name.to_owned(),
                    role,
                };
                TlsContext::load(files, me).expect("test credentials load")
            })
            .clone()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- what the test and the hosts share ---------------------------------

/// State shared between the hosts and the test that steps them. Everything
/// runs on one thread; the locks only satisfy `Send` bounds.
pub(crate) struct Shared {
    pub seed: u64,
    /// Gossip seeds (`ip:port`): the brokers present from the start.
    pub seeds: Vec<String>,
    /// Every node's current view, as its gossip agent publishes it.
    pub views: Mutex<BTreeMap<String, watch::Receiver<Arc<ClusterView>>>>,
    /// Cancelling a broker's token starts its drain (its SIGTERM).
    pub signals: Mutex<BTreeMap<String, CancellationToken>>,
    /// Starts per host: a restarted broker has a newer boot id.
    pub boots: Mutex<BTreeMap<String, u64>>,
    /// Brokers that finished draining, and whether they had handed over
    /// everything by then.
    pub drained: Mutex<BTreeMap<String, bool>>,
    /// Everyone's TLS credentials.
    pub pki: Pki,
}

impl Shared {
    pub(crate) fn new(sim: &Sim<'_>, seed: u64, seed_brokers: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            seed,
            seeds: seed_brokers
                .iter()
                .map(|b| SocketAddr::new(sim.lookup(*b), GOSSIP_PORT).to_string())
                .collect(),
            views: Mutex::default(),
            signals: Mutex::default(),
            boots: Mutex::default(),
            drained: Mutex::default(),
            pki: Pki::new(seed),
        })
    }

    fn boot(&self, name: &str) -> u64 {
        let mut boots = self.boots.lock().unwrap();
        let boot = boots.entry(name.to_owned()).or_insert(0);
        *boot += 1;
        *boot
    }

    pub(crate) fn view(&self, name: &str) -> Option<Arc<ClusterView>> {
        self.views
            .lock()
            .unwrap()
            .get(name)
            .map(|v| v.borrow().clone())
    }

    /// The ring each of `nodes` derives from its view (None: not started).
    pub(crate) fn rings(&self, nodes: &[&str]) -> Vec<Option<Ring>> {
        nodes
            .iter()
            .map(|n| self.view(n).map(|v| v.ring()))
            .collect()
    }

    /// Whether every one of `nodes` sees exactly `brokers` active (and so
    /// derives the same ring; names are compared, as building rings on
    /// every step would dominate the run time).
    pub(crate) fn agree(&self, nodes: &[&str], brokers: &[&str]) -> bool {
        nodes.iter().all(|n| {
            self.view(n).is_some_and(|v| {
                v.active_brokers()
                    .iter()
                    .map(|b| b.name.as_str())
                    .eq(brokers.iter().copied())
            })
        })
    }

    /// Starts `name`'s drain.
    pub(crate) fn drain(&self, name: &str) {
        self.signals.lock().unwrap()[name].cancel();
    }
}

async fn gossip(
    shared: &Shared,
    name: &str,
    role: Role,
    grpc: String,
    shutdown: CancellationToken,
) -> io::Result<Membership> {
    let boot = shared.boot(name);
    let ip = turmoil::lookup(name);
    let socket = turmoil::net::UdpSocket::bind(("0.0.0.0", GOSSIP_PORT)).await?;
    let me = NodeId {
        name: name.to_owned(),
        role,
        gossip: SocketAddr::new(ip, GOSSIP_PORT),
        grpc,
        state: NodeState::Active,
        boot,
        bump: 0,
    };
    let membership = Membership::start_seeded(
        me,
        SimUdp(socket, SocketAddr::new(ip, GOSSIP_PORT)),
        shared.seeds.clone(),
        mix(shared.seed, name, boot),
        Some(sealer(shared, name, boot)),
        shutdown,
    )?;
    shared
        .views
        .lock()
        .unwrap()
        .insert(name.to_owned(), membership.view());
    Ok(membership)
}

/// Registers broker `name`: restartable (`Sim::bounce`) with a new boot.
pub(crate) fn broker(sim: &mut Sim<'_>, shared: &Arc<Shared>, name: &'static str) {
    let shared = shared.clone();
    sim.host(name, move || run_broker(shared.clone(), name));
}

/// One broker process: the same [`BrokerProcess`] as `switchboard node`
/// runs, on turmoil's network.
async fn run_broker(shared: Arc<Shared>, name: &'static str) -> turmoil::Result {
    let signal = CancellationToken::new();
    shared
        .signals
        .lock()
        .unwrap()
        .insert(name.to_owned(), signal.clone());
    let boot = shared.boot(name);
    let ip = turmoil::lookup(name);
    let grpc = turmoil::net::TcpListener::bind(("0.0.0.0", GRPC_PORT)).await?;
    let gossip = turmoil::net::UdpSocket::bind(("0.0.0.0", GOSSIP_PORT)).await?;
    let tls = shared.pki.tls(name, Role::Broker);
    let listeners = BrokerListeners {
        grpc: incoming(grpc, tls.clone()),
        gossip: SimUdp(gossip, SocketAddr::new(ip, GOSSIP_PORT)),
    };
    let settings = BrokerSettings {
        broker: BrokerConfig {
            name: name.to_owned(),
            drain_timeout: DRAIN_TIMEOUT,
            // The simulation's brokers keep no data directory; replication
            // is checked by the replication model and the fault scenarios.
            replication_factor: 1,
            ..BrokerConfig::default()
        },
        namespaces: Namespaces::permissive(),
        advertise: format!("{name}:{GRPC_PORT}"),
        seeds: shared.seeds.clone(),
        boot,
        host: host(&shared, name, boot),
        dialer: dialer(tls),
        gossip_sealer: Some(sealer(&shared, name, boot)),
        // Names are proven by the production runs (tests/cluster_tls.rs);
        // the simulation keeps its rings as gossip gives them.
        prover: None,
        webhooks: Default::default(),
    };
    let process = BrokerProcess::start(listeners, settings, signal)?;
    shared
        .views
        .lock()
        .unwrap()
        .insert(name.to_owned(), process.view());
    let stopped = process.run().await;
    shared
        .drained
        .lock()
        .unwrap()
        .insert(name.to_owned(), stopped.handed_over);
    // The process waited for its gossip agent, which announced the
    // departure on its way out.
    Ok(())
}

/// Registers a node that only gossips (membership scenarios).
pub(crate) fn member(sim: &mut Sim<'_>, shared: &Arc<Shared>, name: &'static str, role: Role) {
    let shared = shared.clone();
    sim.host(name, move || {
        let shared = shared.clone();
        async move {
            let shutdown = CancellationToken::new();
            let _membership = gossip(&shared, name, role, String::new(), shutdown).await?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

// ---- traffic ------------------------------------------------------------

/// The client side of a traffic scenario.
pub(crate) struct Traffic {
    pub channels: Vec<ChannelName>,
    /// How many brokers the gateways wait for before routing.
    pub brokers: usize,
    /// Set once the subscriber has subscribed to every channel.
    pub subscribed: CancellationToken,
    /// Set by the test: the publisher stops.
    pub stop: CancellationToken,
    /// Set by the publisher once every publish it started has an answer.
    pub published: CancellationToken,
    /// Set by the subscriber when it is done waiting for deliveries.
    pub finished: CancellationToken,
    pub starts: Mutex<BTreeMap<String, Start>>,
    pub seen: Mutex<BTreeMap<String, Vec<Seen>>>,
    pub acked: Mutex<BTreeMap<String, Vec<(u64, String)>>>,
    pub failed_publishes: Mutex<BTreeMap<String, usize>>,
}

impl Traffic {
    pub(crate) fn new(channels: usize, brokers: usize) -> Arc<Self> {
        Arc::new(Self {
            channels: (0..channels)
                .map(|i| ChannelName::new(&format!("sim:{i}")).unwrap())
                .collect(),
            brokers,
            subscribed: CancellationToken::new(),
            stop: CancellationToken::new(),
            published: CancellationToken::new(),
            finished: CancellationToken::new(),
            starts: Mutex::default(),
            seen: Mutex::default(),
            acked: Mutex::default(),
            failed_publishes: Mutex::default(),
        })
    }

    /// Whether everything acknowledged so far has arrived, or was ended by
    /// a reset.
    fn caught_up(&self) -> bool {
        let starts = self.starts.lock().unwrap();
        let seen = self.seen.lock().unwrap();
        let acked = self.acked.lock().unwrap();
        starts.iter().all(|(ch, start)| {
            checker::check_channel(
                ch,
                start,
                seen.get(ch).map(Vec::as_slice).unwrap_or_default(),
                acked.get(ch).map(Vec::as_slice).unwrap_or_default(),
                checker::Strictness::Announced,
            )
            .is_ok()
        })
    }
}

/// Records what reaches the subscribing gateway, in arrival order.
struct Recorder(Arc<Traffic>);

#[derive(serde::Deserialize)]
struct FramePosition {
    offset: u64,
    epoch: String,
}

impl DeliverySink for Recorder {
    fn deliver(&self, d: Delivery) {
        let at = |d: &Delivery| {
            let p: FramePosition = serde_json::from_slice(&d.frame).expect("frame with a position");
            p
        };
        let seen = match d.kind {
            DeliveryKind::Publication { offset } => {
                let p = at(&d);
                assert_eq!(p.offset, offset, "frame and delivery disagree");
                Seen::Publication {
                    offset,
                    epoch: p.epoch,
                }
            }
            DeliveryKind::Reset { offset } => {
                let p = at(&d);
                assert_eq!(p.offset, offset, "frame and delivery disagree");
                Seen::Reset {
                    offset,
                    epoch: p.epoch,
                }
            }
            DeliveryKind::Event | DeliveryKind::Control => return,
        };
        self.0
            .seen
            .lock()
            .unwrap()
            .entry(d.channel.as_str().to_owned())
            .or_default()
            .push(seen);
    }
}

struct Discard;

impl DeliverySink for Discard {
    fn deliver(&self, _: Delivery) {}
}

/// A gateway process: gossip and a router, attached with `sink`.
async fn gateway(
    shared: &Shared,
    traffic: &Traffic,
    name: &str,
    sink: Arc<dyn DeliverySink>,
    shutdown: CancellationToken,
) -> Result<Router, Box<dyn std::error::Error>> {
    let membership = gossip(shared, name, Role::Gateway, String::new(), shutdown.clone()).await?;
    let mut view = membership.view();
    let want = traffic.brokers;
    tokio::time::timeout(
        Duration::from_secs(30),
        view.wait_for(|v| v.active_brokers().len() == want),
    )
    .await
    .map_err(|_| format!("{name}: the cluster never formed"))??;
    // The simulated gateway's tasks end on `shutdown`, or with its host.
    let router = Router::following_with(
        membership.view(),
        dialer(shared.pki.tls(name, Role::Gateway)),
        host(shared, name, shared.boots.lock().unwrap()[name]),
        shutdown,
        TaskTracker::new(),
    )?;
    router.attach(GatewayId::from(name), sink).await?;
    Ok(router)
}

/// `g1`: subscribes to every channel and records what arrives until the
/// publisher is done and everything it was told was published arrived (or
/// a bound passes).
pub(crate) fn subscriber(sim: &mut Sim<'_>, shared: &Arc<Shared>, traffic: &Arc<Traffic>) {
    let (shared, traffic) = (shared.clone(), traffic.clone());
    sim.client("g1", async move {
        let shutdown = CancellationToken::new();
        let sink = Arc::new(Recorder(traffic.clone()));
        let router = gateway(&shared, &traffic, "g1", sink, shutdown.clone()).await?;
        for channel in &traffic.channels {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let reply = loop {
                let req = SubscribeRequest {
                    gateway: GatewayId::from("g1"),
                    channel: channel.clone(),
                    since: None,
                    // In the channel's presence, as a WebSocket client of a
                    // presence namespace is: a moved subscription is then
                    // placed again with its presence entries too.
                    client: Some(ClientInfo {
                        client_id: format!("c-{channel}"),
                        user_id: "u1".to_owned(),
                        info: None,
                    }),
                };
                match router.subscribe(req).await {
                    Ok(reply) => break reply,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(channel = %channel, error = %e, "subscribe failed; again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(format!("subscribe {channel}: {e}").into()),
                }
            };
            traffic.starts.lock().unwrap().insert(
                channel.as_str().to_owned(),
                Start {
                    offset: reply.position.offset,
                    epoch: reply.position.epoch,
                },
            );
        }
        traffic.subscribed.cancel();
        traffic.published.cancelled().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !traffic.caught_up() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A little longer: a duplicate or late delivery would show now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        traffic.finished.cancel();
        shutdown.cancel();
        Ok(())
    });
}

/// How often the publisher publishes to every channel.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// `g2`: once `g1` is subscribed, publishes `{"n": round}` to every channel
/// every [`PUBLISH_EVERY`] without waiting for earlier answers (open loop),
/// recording each acknowledged position, until told to stop.
pub(crate) fn publisher(sim: &mut Sim<'_>, shared: &Arc<Shared>, traffic: &Arc<Traffic>) {
    let (shared, traffic) = (shared.clone(), traffic.clone());
    sim.client("g2", async move {
        let shutdown = CancellationToken::new();
        let router = gateway(&shared, &traffic, "g2", Arc::new(Discard), shutdown.clone()).await?;
        traffic.subscribed.cancelled().await;
        let mut inflight = JoinSet::new();
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        let record = |r: Result<(ChannelName, Result<_, BrokerError>), _>| {
            let (channel, result) = r.expect("publish task");
            match result {
                Ok(position) => {
                    let switchboard_core::Position { offset, epoch } = position;
                    traffic
                        .acked
                        .lock()
                        .unwrap()
                        .entry(ChannelName::as_str(&channel).to_owned())
                        .or_default()
                        .push((offset, epoch));
                }
                Err(_) => {
                    *traffic
                        .failed_publishes
                        .lock()
                        .unwrap()
                        .entry(ChannelName::as_str(&channel).to_owned())
                        .or_default() += 1;
                }
            }
        };
        for round in 1u64.. {
            tokio::select! {
                _ = traffic.stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            for channel in &traffic.channels {
                let (router, channel) = (router.clone(), channel.clone());
                let data: Box<RawValue> =
                    RawValue::from_string(Value::from(round).to_string()).unwrap();
                inflight.spawn(async move {
                    let req = PublishRequest {
                        channel: channel.clone(),
                        from: String::new(),
                        data,
                        idempotency_key: None,
                    };
                    let result = router.publish(req).await;
                    (channel, result)
                });
            }
            while let Some(r) = inflight.try_join_next() {
                record(r);
            }
        }
        while let Some(r) = inflight.join_next().await {
            record(r);
        }
        traffic.published.cancel();
        traffic.finished.cancelled().await;
        shutdown.cancel();
        Ok(())
    });
}

// ---- stepping -----------------------------------------------------------

/// Steps `sim` until `done` holds; returns the simulated time it took, or
/// fails after `limit`.
pub(crate) fn step_until(
    sim: &mut Sim<'_>,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&mut Sim<'_>) -> bool,
) -> Duration {
    let start = sim.elapsed();
    loop {
        // Checked every few simulated milliseconds, not every step.
        if sim.elapsed().as_millis() % 5 == 0 && done(sim) {
            return sim.elapsed() - start;
        }
        assert!(
            sim.elapsed() - start < limit,
            "not within {limit:?}: {what}"
        );
        sim.step().expect("simulation step");
    }
}

/// Steps `sim` for `d` of simulated time.
pub(crate) fn step_for(sim: &mut Sim<'_>, d: Duration) {
    let end = sim.elapsed() + d;
    while sim.elapsed() < end {
        sim.step().expect("simulation step");
    }
}

/// Steps until every client finished.
pub(crate) fn finish(sim: &mut Sim<'_>, limit: Duration) {
    let start = sim.elapsed();
    while !sim.step().expect("simulation step") {
        assert!(
            sim.elapsed() - start < limit,
            "clients did not finish within {limit:?}"
        );
    }
}
