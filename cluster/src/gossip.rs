//! The gossip agent: drives a [`foca`] (SWIM) instance over UDP with tokio
//! and publishes the resulting [`ClusterView`]. foca decides who is alive;
//! this file only moves its packets and timers and turns its notifications
//! into the view.
//!
//! Seeds may be `host:port` or DNS names (a Kubernetes headless service
//! resolves to every broker pod); they are resolved again on every
//! announce round, so pods that come later are found.
//!
//! Packets go through a [`Datagram`] socket: a tokio [`UdpSocket`] in
//! production, turmoil's simulated one in the simulation tests, so the
//! same agent runs in both. With a [`Sealer`], every packet is sealed on
//! the way out and opened on the way in; one that no key opens is counted
//! (`switchboard_gossip_packets_rejected_total`) and dropped before foca
//! parses a byte of it.

use std::{future::Future, io, net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use foca::{AccumulatingRuntime, Config, Foca, OwnedNotification, PostcardCodec, Timer};
use foca_rand::{SeedableRng, rngs::StdRng};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker, time::DelayQueue};

use crate::{
    keyring::{OVERHEAD, Sealer},
    membership::{ClusterView, ConflictLog, IdentityConflict, NodeId, NodeState},
};

/// How often a node that knows no one re-announces itself to the seeds.
const LONELY_ANNOUNCE: Duration = Duration::from_millis(500);
/// How often a node re-announces to the seeds anyway (heals partitions).
const SEED_ANNOUNCE: Duration = Duration::from_secs(5);
/// How long a node that finds its own name held elsewhere waits before it
/// gives up: time for failure detection to declare a dead holder down
/// (a restart at a new address).
pub const CONFLICT_GRACE: Duration = Duration::from_secs(10);

/// Failure detection tuned for a LAN: a dead node is declared down within a
/// few seconds.
pub fn foca_config(cluster_size: u32) -> Config {
    foca_config_for(cluster_size, false)
}

/// [`foca_config`], leaving room for the seal's overhead in each datagram
/// when `sealed`.
fn foca_config_for(cluster_size: u32, sealed: bool) -> Config {
    let mut config = Config::new_lan(NonZeroU32::new(cluster_size.max(2)).expect("non-zero"));
    config.probe_period = Duration::from_millis(500);
    config.probe_rtt = Duration::from_millis(250);
    config.suspect_to_down_after = Duration::from_secs(2);
    config.remove_down_after = Some(Duration::from_secs(30));
    if sealed {
        let room = config.max_packet_size.get() - OVERHEAD;
        config.max_packet_size = std::num::NonZeroUsize::new(room).expect("room left");
    }
    config
}

/// What gossip needs of a UDP socket.
pub trait Datagram: Send + Sync + 'static {
    fn send_to(&self, buf: &[u8], to: SocketAddr)
    -> impl Future<Output = io::Result<usize>> + Send;

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// The address peers reach this socket on: announced as this node's
    /// gossip address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Datagram for UdpSocket {
    fn send_to(
        &self,
        buf: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        UdpSocket::send_to(self, buf, to)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        UdpSocket::recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

enum Command {
    SetState(NodeState),
}

/// A running gossip agent.
#[derive(Clone)]
pub struct Membership {
    view: watch::Receiver<Arc<ClusterView>>,
    commands: mpsc::Sender<Command>,
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl Membership {
    /// Binds `bind`, joins through `seeds`, and gossips until `shutdown`
    /// (then announces its departure).
    pub async fn start(
        me: NodeId,
        bind: SocketAddr,
        seeds: Vec<String>,
        sealer: Option<Sealer>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind).await?;
        Self::start_on(me, socket, seeds, sealer, shutdown)
    }

    /// Gossips on `socket` (already bound; its address is the one announced),
    /// joining through `seeds`, until `shutdown`; packets sealed by
    /// `sealer` (plain without one: a cluster that trusts its network).
    pub fn start_on<S: Datagram>(
        me: NodeId,
        socket: S,
        seeds: Vec<String>,
        sealer: Option<Sealer>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        Self::start_seeded(me, socket, seeds, rand::random(), sealer, shutdown)
    }

    /// [`Self::start_on`] with foca's random choices (whom to probe, whom to
    /// gossip to) drawn from `rng_seed`: a simulation seed fixes them.
    pub fn start_seeded<S: Datagram>(
        me: NodeId,
        socket: S,
        seeds: Vec<String>,
        rng_seed: u64,
        sealer: Option<Sealer>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let tracker = TaskTracker::new();
        Self::start_in(&tracker, me, socket, seeds, rng_seed, sealer, shutdown)
    }

    /// [`Self::start_seeded`], the agent's task tracked by `tracker`, so that
    /// the process that owns it waits for its farewell on shutdown.
    #[allow(clippy::too_many_arguments)]
    pub fn start_in<S: Datagram>(
        tracker: &TaskTracker,
        me: NodeId,
        socket: S,
        seeds: Vec<String>,
        rng_seed: u64,
        sealer: Option<Sealer>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let addr = socket.local_addr()?;
        let me = NodeId { gossip: addr, ..me };
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::new(me.clone())));
        let (commands, rx) = mpsc::channel(16);
        let rng = StdRng::seed_from_u64(rng_seed);
        let wire = Wire { socket, sealer };
        let task = tracker
            .spawn(agent(me, wire, seeds, rng, view_tx, rx, shutdown))
            .abort_handle();
        Ok(Self {
            view,
            commands,
            addr,
            task,
        })
    }

    /// The cluster as this node sees it, updated on every change.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// The UDP address gossip listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gossiping at once, without telling anyone: to the others it
    /// is a crash. (Shutdown, by contrast, announces the departure.)
    pub fn halt(&self) {
        self.task.abort();
    }

    /// Announces a new state for this node (e.g. active, draining).
    pub async fn set_state(&self, state: NodeState) {
        let _ = self.commands.send(Command::SetState(state)).await;
    }

    /// The view to act on for a node that must not touch the cluster under
    /// a name that is not its own (a gateway attaches to brokers by name):
    /// itself alone until it has been among others for `settle` without
    /// finding its name held elsewhere, and again whenever it does.
    pub fn vetted_view(
        &self,
        tracker: &TaskTracker,
        settle: Duration,
        shutdown: CancellationToken,
    ) -> watch::Receiver<Arc<ClusterView>> {
        let mut view = self.view();
        let alone = Arc::new((**view.borrow()).clone().alone());
        let (tx, vetted) = watch::channel(alone.clone());
        tracker.spawn(async move {
            let settled = async {
                let _ = view.wait_for(|v| v.members().count() > 1).await;
                tokio::time::sleep(settle).await;
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = settled => {}
            }
            loop {
                let now = view.borrow_and_update().clone();
                tx.send_replace(match now.self_conflict() {
                    Some(_) => alone.clone(),
                    None => now,
                });
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = view.changed() => if changed.is_err() { return },
                }
            }
        });
        vetted
    }

    /// Resolves once this node's own name has been held by another live
    /// member (an older identity at another address) for `grace`: the
    /// node must then stop. Meanwhile an active node steps out of the ring
    /// (joining), and back in if the other goes within `grace`.
    pub async fn identity_conflict(&self, grace: Duration) -> IdentityConflict {
        let mut view = self.view();
        loop {
            let found = view
                .wait_for(|v| v.self_conflict().is_some())
                .await
                .map(|v| (v.self_conflict(), v.me().map(|me| me.state)));
            // The agent has stopped: nothing more to find.
            let Ok((Some(conflict), state)) = found else {
                return std::future::pending().await;
            };
            tracing::error!(
                member = %conflict.name,
                holder = %conflict.addr,
                "another member with this node's name is live; out of service until it goes"
            );
            if state == Some(NodeState::Active) {
                self.set_state(NodeState::Joining).await;
            }
            let cleared =
                tokio::time::timeout(grace, view.wait_for(|v| v.self_conflict().is_none()))
                    .await
                    .is_ok();
            if !cleared {
                return view.borrow().self_conflict().unwrap_or(conflict);
            }
            tracing::info!(member = %conflict.name, "the other member with this name is gone");
            if state == Some(NodeState::Active) {
                self.set_state(NodeState::Active).await;
            }
        }
    }
}

/// The socket and the seal on it.
struct Wire<S> {
    socket: S,
    sealer: Option<Sealer>,
}

impl<S: Datagram> Wire<S> {
    async fn send(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match &mut self.sealer {
            Some(sealer) => self.socket.send_to(&sealer.seal(data), to).await,
            None => self.socket.send_to(data, to).await,
        }
    }

    /// Opens a received packet: `None` (counted) if it is to be dropped.
    fn open<'a>(&self, packet: &'a [u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
        let Some(sealer) = &self.sealer else {
            return Some(packet.into());
        };
        match sealer.open(packet) {
            Ok(plain) => Some(plain.into()),
            Err(rejection) => {
                metrics::counter!(
                    "switchboard_gossip_packets_rejected_total",
                    "reason" => rejection.label()
                )
                .increment(1);
                None
            }
        }
    }
}

struct Agent<S> {
    wire: Wire<S>,
    conflict_log: ConflictLog,
    runtime: AccumulatingRuntime<NodeId>,
    view: ClusterView,
    view_tx: watch::Sender<Arc<ClusterView>>,
    /// foca's timers, due in order: one queue, not a task per timer.
    timers: DelayQueue<Timer<NodeId>>,
    /// This node's identity and incarnation as its last message carried
    /// them.
    me: NodeId,
    incarnation: u16,
}

impl<S: Datagram> Agent<S> {
    /// Carries out what foca asked for after each interaction.
    async fn drain(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            if let Err(e) = self.wire.send(&data, to.gossip).await {
                tracing::debug!(to = ?to, error = %e, "gossip send failed");
            }
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.insert(timer, after);
        }
        let mut changed = false;
        while let Some(n) = self.runtime.to_notify() {
            changed |= match n {
                OwnedNotification::MemberUp(id) => self.member_up(id),
                OwnedNotification::MemberDown(id) => {
                    let changed = self.view.down(&id);
                    if changed {
                        tracing::warn!(member = ?id, gossip = %id.gossip, "member down");
                    } else {
                        // A refused rival, or an identity already replaced.
                        tracing::debug!(member = ?id, gossip = %id.gossip, "former identity down");
                    }
                    changed
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::debug!(from = ?old, to = ?new, "member changed");
                    self.member_up(new)
                }
                // Every message carries the sender's incarnation, which
                // foca raises only to refute a suspicion of this node (and
                // resets when the identity changes): some members counted
                // it out for a while.
                OwnedNotification::DataSent(header) => {
                    let refuted =
                        header.src_incarnation > self.incarnation && header.src == self.me;
                    if header.src != self.me {
                        self.me = header.src.clone();
                    }
                    self.incarnation = header.src_incarnation;
                    if refuted {
                        tracing::info!(
                            incarnation = self.incarnation,
                            "refuted a suspicion of this node"
                        );
                        self.view.doubted();
                    }
                    refuted
                }
                OwnedNotification::Rejoin(me) => {
                    // Declared down by others, who may have taken over
                    // what this node holds.
                    tracing::warn!(me = ?me, "declared down by the cluster; rejoining");
                    self.view.doubted();
                    self.view.up(me);
                    true
                }
                _ => false,
            };
        }
        if changed {
            self.view_tx.send_replace(Arc::new(self.view.clone()));
        }
    }

    /// A member is up or changed: into the view, unless its name is held
    /// by another live member (then counted, and logged now and then).
    fn member_up(&mut self, id: NodeId) -> bool {
        let conflicts = self.view.conflicts();
        let (name, gossip) = (id.name.clone(), id.gossip);
        let changed = self.view.up(id.clone());
        if self.view.conflicts() > conflicts {
            metrics::counter!("switchboard_gossip_identity_conflicts_total").increment(1);
            if self
                .conflict_log
                .should_log(&name, tokio::time::Instant::now())
            {
                let holder = self.view.get(&name).map(|h| h.gossip);
                tracing::warn!(
                    member = %name,
                    refused = %gossip,
                    holder = ?holder,
                    "identity conflict: a member with this name is already live elsewhere; refused"
                );
            }
        } else if changed {
            tracing::info!(member = ?id, gossip = %gossip, "member up");
        }
        changed
    }
}

/// A stand-in identity for a seed we know only by address: foca needs an
/// identity to send to; the seed answers with its real one.
fn seed_id(addr: SocketAddr, me: &NodeId) -> NodeId {
    NodeId {
        name: format!("seed@{addr}"),
        gossip: addr,
        grpc: String::new(),
        boot: 0,
        bump: 0,
        ..me.clone()
    }
}

async fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::debug!(seed = %seed, error = %e, "seed does not resolve"),
        }
    }
    out
}

async fn agent<S: Datagram>(
    me: NodeId,
    wire: Wire<S>,
    seeds: Vec<String>,
    rng: StdRng,
    view_tx: watch::Sender<Arc<ClusterView>>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) {
    // Exported from the start, as the other unlabelled counters are.
    metrics::counter!("switchboard_gossip_identity_conflicts_total").increment(0);
    let config = foca_config_for(16, wire.sealer.is_some());
    let mut foca = Foca::new(me.clone(), config, rng, PostcardCodec);
    let local = wire.socket.local_addr().ok();
    let mut agent = Agent {
        wire,
        conflict_log: ConflictLog::default(),
        runtime: AccumulatingRuntime::new(),
        view: ClusterView::new(me.clone()),
        view_tx,
        timers: DelayQueue::new(),
        me: me.clone(),
        incarnation: 0,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut lonely = tokio::time::interval(LONELY_ANNOUNCE);
    let mut seed_round = tokio::time::interval(SEED_ANNOUNCE);
    loop {
        tokio::select! {
                biased;
            _ = shutdown.cancelled() => {
                let _ = foca.leave_cluster(&mut agent.runtime);
                agent.drain().await;
                return;
            }
            Some(timer) = std::future::poll_fn(|cx| agent.timers.poll_expired(cx)) => {
                if let Err(e) = foca.handle_timer(timer.into_inner(), &mut agent.runtime) {
                    tracing::debug!(error = %e, "gossip timer failed");
                }
            }
            Some(cmd) = commands.recv() => match cmd {
                Command::SetState(state) => {
                    let new = foca.identity().with_state(state);
                    agent.view.up(new.clone());
                    agent.view_tx.send_replace(Arc::new(agent.view.clone()));
                    if let Err(e) = foca.change_identity(new, &mut agent.runtime) {
                        tracing::warn!(error = %e, "cannot announce state change");
                    }
                }
            },
            recv = agent.wire.socket.recv_from(&mut buf) => match recv {
                Ok((n, from)) => match agent.wire.open(&buf[..n]) {
                    Some(data) => {
                        if let Err(e) = foca.handle_data(&data, &mut agent.runtime) {
                            tracing::debug!(error = %e, "bad gossip packet");
                        }
                    }
                    None => tracing::debug!(from = %from, "gossip packet refused: no key opens it"),
                },
                Err(e) => tracing::debug!(error = %e, "gossip receive failed"),
            },
            _ = lonely.tick(), if foca.num_members() == 0 => {
                for addr in resolve(&seeds).await {
                    if Some(addr) != local || seeds.is_empty() {
                        let _ = foca.announce(seed_id(addr, foca.identity()), &mut agent.runtime);
                    }
                }
            }
            _ = seed_round.tick() => {
                for addr in resolve(&seeds).await {
                    if Some(addr) != local {
                        let _ = foca.announce(seed_id(addr, foca.identity()), &mut agent.runtime);
                    }
                }
            }
        }
        agent.drain().await;
    }
}
