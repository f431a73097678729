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
//! same agent runs in both.

use std::{future::Future, io, net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use foca::{AccumulatingRuntime, Config, Foca, OwnedNotification, PostcardCodec, Timer};
use foca_rand::{SeedableRng, rngs::StdRng};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker, time::DelayQueue};

use crate::membership::{ClusterView, NodeId, NodeState};

/// How often a node that knows no one re-announces itself to the seeds.
const LONELY_ANNOUNCE: Duration = Duration::from_millis(500);
/// How often a node re-announces to the seeds anyway (heals partitions).
const SEED_ANNOUNCE: Duration = Duration::from_secs(5);

/// Failure detection tuned for a LAN: a dead node is declared down within a
/// few seconds.
pub fn foca_config(cluster_size: u32) -> Config {
    let mut config = Config::new_lan(NonZeroU32::new(cluster_size.max(2)).expect("non-zero"));
    config.probe_period = Duration::from_millis(500);
    config.probe_rtt = Duration::from_millis(250);
    config.suspect_to_down_after = Duration::from_secs(2);
    config.remove_down_after = Some(Duration::from_secs(30));
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
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind).await?;
        Self::start_on(me, socket, seeds, shutdown)
    }

    /// Gossips on `socket` (already bound; its address is the one announced),
    /// joining through `seeds`, until `shutdown`.
    pub fn start_on<S: Datagram>(
        me: NodeId,
        socket: S,
        seeds: Vec<String>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        Self::start_seeded(me, socket, seeds, rand::random(), shutdown)
    }

    /// [`Self::start_on`] with foca's random choices (whom to probe, whom to
    /// gossip to) drawn from `rng_seed`: a simulation seed fixes them.
    pub fn start_seeded<S: Datagram>(
        me: NodeId,
        socket: S,
        seeds: Vec<String>,
        rng_seed: u64,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        Self::start_in(&TaskTracker::new(), me, socket, seeds, rng_seed, shutdown)
    }

    /// [`Self::start_seeded`], the agent's task tracked by `tracker`, so that
    /// the process that owns it waits for its farewell on shutdown.
    pub fn start_in<S: Datagram>(
        tracker: &TaskTracker,
        me: NodeId,
        socket: S,
        seeds: Vec<String>,
        rng_seed: u64,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let addr = socket.local_addr()?;
        let me = NodeId { gossip: addr, ..me };
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::new(me.clone())));
        let (commands, rx) = mpsc::channel(16);
        let rng = StdRng::seed_from_u64(rng_seed);
        let task = tracker
            .spawn(agent(me, socket, seeds, rng, view_tx, rx, shutdown))
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
}

struct Agent<S> {
    socket: Arc<S>,
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
            if let Err(e) = self.socket.send_to(&data, to.gossip).await {
                tracing::debug!(to = ?to, error = %e, "gossip send failed");
            }
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.insert(timer, after);
        }
        let mut changed = false;
        while let Some(n) = self.runtime.to_notify() {
            changed |= match n {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(member = ?id, "member up");
                    self.view.up(id)
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::warn!(member = ?id, "member down");
                    self.view.down(&id)
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(from = ?old, to = ?new, "member changed");
                    self.view.up(new)
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
    socket: S,
    seeds: Vec<String>,
    rng: StdRng,
    view_tx: watch::Sender<Arc<ClusterView>>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut foca = Foca::new(me.clone(), foca_config(16), rng, PostcardCodec);
    let mut agent = Agent {
        socket: socket.clone(),
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
            recv = socket.recv_from(&mut buf) => match recv {
                Ok((n, _from)) => {
                    if let Err(e) = foca.handle_data(&buf[..n], &mut agent.runtime) {
                        tracing::debug!(error = %e, "bad gossip packet");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "gossip receive failed"),
            },
            _ = lonely.tick(), if foca.num_members() == 0 => {
                for addr in resolve(&seeds).await {
                    if addr != socket.local_addr().unwrap_or(addr) || seeds.is_empty() {
                        let _ = foca.announce(seed_id(addr, foca.identity()), &mut agent.runtime);
                    }
                }
            }
            _ = seed_round.tick() => {
                for addr in resolve(&seeds).await {
                    if Some(addr) != socket.local_addr().ok() {
                        let _ = foca.announce(seed_id(addr, foca.identity()), &mut agent.runtime);
                    }
                }
            }
        }
        agent.drain().await;
    }
}
