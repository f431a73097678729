//! [`PeerStreams`]: the leader's one `Replicate` stream per member broker,
//! opened on first use. Messages to a member leave in order on its stream
//! (appends pipelined, never one round trip each); its answers are fed to
//! [`Replicas::on_reply`] and what that says to send goes out at once. A
//! stream that ends (the member restarted, or its connection was reset) is
//! opened again by the next message, starting with [`Replicas::resync`]:
//! the configuration and every append the member has not acknowledged.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use switchboard_core::BrokerName;
use switchboard_proto::replica::v1::{self as pb, replica_client::ReplicaClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Channel;

use super::{Replicas, leading::Outgoing};

/// Messages queued for one member before its stream is dropped (and
/// resynchronised when opened again).
const QUEUE: usize = 8192;

/// Places in a member's queue that heartbeats leave free for appends and
/// configurations. A leader sends one heartbeat per channel it leads to
/// each member every renewal (150 ms); leading thousands of channels, with
/// a member slow to read, they filled the queue, and a full queue resets
/// the stream, which marks the member down for [`DOWN_FOR`]: every channel
/// it was in then refilled or was refused (a churn run with debug logs, at
/// about 3,000 channels led per broker: 271 publishes refused, 24
/// channels left held; session 21).
const HEARTBEAT_RESERVE: usize = QUEUE / 4;

fn is_heartbeat(request: &pb::ReplicateRequest) -> bool {
    matches!(
        request.kind,
        Some(pb::replicate_request::Kind::Heartbeat(_))
    )
}

/// How long a member whose stream ended counts as down without answering
/// again: longer than gossip takes to declare a dead broker down (about
/// 3 s), so that gossip decides after it. A broker that was killed and came
/// back is live again by gossip, and may be chosen again (as R = 2's
/// witness, say) though no stream to it was opened since.
const DOWN_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// How a leader reaches a member's replication service.
pub type SharedDial = Arc<dyn Fn(&BrokerName) -> Option<ReplicaClient<Channel>> + Send + Sync>;

/// The leader's streams, by member.
pub struct PeerStreams {
    replicas: Arc<Replicas>,
    dial: SharedDial,
    /// Each stream with the number it was opened as.
    streams: Mutex<HashMap<BrokerName, (u64, mpsc::Sender<pb::ReplicateRequest>)>>,
    opened: std::sync::atomic::AtomicU64,
    /// Members whose stream ended and that have not answered since: a
    /// killed broker's connections reset at once, long before gossip
    /// declares it down.
    down: Mutex<HashMap<BrokerName, std::time::Instant>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl PeerStreams {
    pub fn new(
        replicas: Arc<Replicas>,
        dial: SharedDial,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            replicas,
            dial,
            streams: Mutex::new(HashMap::new()),
            opened: Default::default(),
            down: Default::default(),
            tasks,
            shutdown,
        })
    }

    /// Sends each message on its member's stream, opening it if needed.
    /// A heartbeat is dropped, not queued, unless more than
    /// [`HEARTBEAT_RESERVE`] places are free: it only renews a lease, which
    /// the next renewal does again.
    pub fn send(self: &Arc<Self>, outgoing: Vec<Outgoing>) {
        for Outgoing { to, request } in outgoing {
            let tx = self.stream(&to);
            let Some(tx) = tx else { continue };
            if is_heartbeat(&request) && tx.capacity() <= HEARTBEAT_RESERVE {
                metrics::counter!("switchboard_replication_heartbeats_dropped_total").increment(1);
                continue;
            }
            if tx.try_send(request).is_err() {
                // Full or gone: drop it; the next message opens it afresh
                // and resends what was not acknowledged.
                tracing::warn!(member = %to, "replication stream full or closed; reopening");
                self.streams.lock().remove(&to);
            }
        }
    }

    fn stream(self: &Arc<Self>, to: &BrokerName) -> Option<mpsc::Sender<pb::ReplicateRequest>> {
        if let Some((_, tx)) = self
            .streams
            .lock()
            .get(to)
            .filter(|(_, tx)| !tx.is_closed())
        {
            return Some(tx.clone());
        }
        let client = (self.dial)(to)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        // What the member has not acknowledged goes first.
        for Outgoing { request, .. } in self.replicas.resync(to) {
            let _ = tx.try_send(request);
        }
        let n = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.streams.lock().insert(to.clone(), (n, tx.clone()));
        let this = self.clone();
        let member = to.clone();
        self.tasks
            .spawn(async move { this.run((member, n), client, rx).await });
        Some(tx)
    }

    async fn run(
        self: Arc<Self>,
        (member, n): (BrokerName, u64),
        mut client: ReplicaClient<Channel>,
        rx: mpsc::Receiver<pb::ReplicateRequest>,
    ) {
        let opened = tokio::select! {
            () = self.shutdown.cancelled() => return,
            opened = client.replicate(ReceiverStream::new(rx)) => opened,
        };
        let mut replies = match opened {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::debug!(member = %member, error = %e, "replication stream refused");
                return self.ended(&member, n);
            }
        };
        loop {
            let reply = tokio::select! {
                () = self.shutdown.cancelled() => return,
                reply = replies.message() => reply,
            };
            match reply {
                Ok(Some(reply)) => {
                    self.down.lock().remove(&member);
                    match self.replicas.on_reply(&member, reply) {
                        Ok(out) => self.send(out),
                        Err(e) => {
                            tracing::debug!(member = %member, error = %e, "reply not applied")
                        }
                    }
                }
                Ok(None) | Err(_) => return self.ended(&member, n),
            }
        }
    }

    /// Whether `member`'s stream ended, less than [`DOWN_FOR`] ago, and it
    /// has not answered since.
    pub fn is_down(&self, member: &BrokerName) -> bool {
        self.down
            .lock()
            .get(member)
            .is_some_and(|at| at.elapsed() < DOWN_FOR)
    }

    /// Marks `member` down as an ended stream does: a leader whose channel
    /// this broker took over because it was lost here (its stream ended or
    /// it fell silent). Without the mark, a refill in the next second could
    /// take it back into the channel's configuration, as gossip has not
    /// declared it down yet and this broker may have no stream of its own
    /// to it; once gossip did, that term would have no majority of live
    /// voters, and the leader would step down with publishes in flight.
    pub fn mark_down(&self, member: &BrokerName) {
        self.down
            .lock()
            .insert(member.clone(), std::time::Instant::now());
    }

    fn ended(&self, member: &BrokerName, n: u64) {
        tracing::debug!(member = %member, "replication stream ended");
        self.down
            .lock()
            .insert(member.clone(), std::time::Instant::now());
        let mut streams = self.streams.lock();
        if streams.get(member).is_some_and(|(m, _)| *m == n) {
            streams.remove(member);
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::Namespaces;

    use super::*;

    fn to_b2(kind: pb::replicate_request::Kind) -> Outgoing {
        Outgoing {
            to: "b2".into(),
            request: pb::ReplicateRequest {
                leader: "b1".into(),
                channel: "news".into(),
                kind: Some(kind),
            },
        }
    }

    /// On one thread, the stream's task does not run before the asserts:
    /// the queue holds all that was sent.
    #[tokio::test]
    async fn heartbeats_never_fill_a_members_queue_nor_reset_its_stream() {
        let replicas =
            Arc::new(Replicas::open_in("b1".into(), Namespaces::permissive(), None).unwrap());
        let dial: SharedDial = Arc::new(|_| {
            let channel = switchboard_cluster::dialer::endpoint("127.0.0.1:1")
                .ok()?
                .connect_lazy();
            Some(ReplicaClient::new(channel))
        });
        let stop = CancellationToken::new();
        let streams = PeerStreams::new(replicas, dial, TaskTracker::new(), stop.clone());
        let beat = || {
            to_b2(pb::replicate_request::Kind::Heartbeat(
                pb::Heartbeat::default(),
            ))
        };
        streams.send((0..QUEUE + 100).map(|_| beat()).collect());
        let queued = |s: &PeerStreams| {
            let streams = s.streams.lock();
            let (_, tx) = &streams[&BrokerName::from("b2")];
            QUEUE - tx.capacity()
        };
        assert_eq!(queued(&streams), QUEUE - HEARTBEAT_RESERVE);
        // What must not be lost still has room, on the same stream.
        let append = pb::replicate_request::Kind::Append(pb::Append::default());
        streams.send(vec![to_b2(append)]);
        assert_eq!(queued(&streams), QUEUE - HEARTBEAT_RESERVE + 1);
        assert_eq!(streams.opened.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(!streams.is_down(&"b2".into()));
        stop.cancel();
    }
}
