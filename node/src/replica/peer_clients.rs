//! [`PeerClients`]: one replication client per broker for calls (votes,
//! accepts, retirements), kept across calls. A dial is a new connection
//! with a mutual-TLS handshake at both ends; dialled per call, a channel's
//! first term cost four (a prepare and an accept at each of two voters),
//! and the handshakes, not the votes, were what made churn expensive.
//!
//! The client is a lazily connected gRPC channel: a connection that broke
//! (the broker was killed, or restarted) is dialled again by the next call,
//! and one to a frozen broker is closed by its keepalive, as a fresh one's
//! would be. A broker whose address changes gets a new client.
//!
//! A connection is replaced after [`CALLS_PER_CONNECTION`] calls. An
//! election decided before every voter answered drops the calls still out
//! (the client resets their streams), and an answer that arrives once h2
//! has forgotten such a stream counts towards h2's limit of 1,024 "local
//! error resets" per connection, past which the client closes the whole
//! connection with every call on it (`ENHANCE_YOUR_CALM`). The first churn
//! run with one connection per broker reached it in under a minute.
//!
//! The leader's `Replicate` streams are not pooled: each gets a connection
//! of its own ([`PeerClients::fresh`]), so that a burst of appends never
//! queues a vote behind it.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use switchboard_cluster::{dialer::SharedDialer, ownership::Placement};
use switchboard_core::BrokerName;
use switchboard_proto::replica::v1::replica_client::ReplicaClient;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Calls made over one connection before a new one is dialled: well
/// under h2's 1,024 resets (a dropped call's late headers and then its
/// late trailers may each count), and enough that the handshake is paid
/// once in hundreds of calls.
pub const CALLS_PER_CONNECTION: u32 = 256;

/// The clients, by broker.
pub struct PeerClients {
    placement: watch::Receiver<Arc<Placement>>,
    dialer: SharedDialer,
    clients: Mutex<HashMap<BrokerName, Pooled>>,
}

/// A client, the address it was dialled at, and the calls it was given for.
struct Pooled {
    addr: String,
    client: ReplicaClient<Channel>,
    calls: u32,
}

impl PeerClients {
    pub fn new(placement: watch::Receiver<Arc<Placement>>, dialer: SharedDialer) -> Self {
        Self {
            placement,
            dialer,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A client for one call to `broker` at the address the ring gives it
    /// now; none for a broker the ring does not know. Calls still out on a
    /// replaced connection finish on it.
    pub fn get(&self, broker: &BrokerName) -> Option<ReplicaClient<Channel>> {
        let addr = self.placement.borrow().addr(broker.as_str())?;
        let mut clients = self.clients.lock();
        if let Some(p) = clients.get_mut(broker)
            && p.addr == addr.addr
            && p.calls < CALLS_PER_CONNECTION
        {
            p.calls += 1;
            return Some(p.client.clone());
        }
        let client = ReplicaClient::new(self.dialer.dial(&addr).ok()?);
        let pooled = Pooled {
            addr: addr.addr,
            client: client.clone(),
            calls: 1,
        };
        clients.insert(broker.clone(), pooled);
        Some(client)
    }

    /// A client on a connection of its own to `broker`, kept by nobody
    /// here: for a leader's `Replicate` stream to it.
    pub fn fresh(&self, broker: &BrokerName) -> Option<ReplicaClient<Channel>> {
        let addr = self.placement.borrow().addr(broker.as_str())?;
        Some(ReplicaClient::new(self.dialer.dial(&addr).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use switchboard_cluster::{
        dialer::{Dialer, TcpDialer},
        membership::{ClusterView, NodeId, NodeState, Role},
    };
    use switchboard_core::{BrokerAddr, BrokerError};

    use super::*;

    /// Counts the connections it would make.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Dialer for Counting {
        fn dial(&self, broker: &BrokerAddr) -> Result<Channel, BrokerError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            TcpDialer.dial(broker)
        }
    }

    fn placement(b2_at: &str) -> Arc<Placement> {
        let mut view = ClusterView::default();
        for (name, grpc) in [("b1", "127.0.0.1:7001"), ("b2", b2_at)] {
            view.up(NodeId {
                name: name.into(),
                role: Role::Broker,
                gossip: "127.0.0.1:1".parse().unwrap(),
                grpc: grpc.into(),
                state: NodeState::Active,
                boot: 1,
                bump: 0,
            });
        }
        Arc::new(Placement::new(&view, "b1"))
    }

    /// Clients following the ring `tx` sends, and how many dials they made.
    fn clients() -> (
        watch::Sender<Arc<Placement>>,
        PeerClients,
        impl Fn() -> usize,
    ) {
        let (tx, rx) = watch::channel(placement("127.0.0.1:7002"));
        let dialer = Arc::new(Counting::default());
        let dials = {
            let dialer = dialer.clone();
            move || dialer.0.load(Ordering::Relaxed)
        };
        (tx, PeerClients::new(rx, dialer), dials)
    }

    #[tokio::test]
    async fn one_connection_per_broker_and_address_however_many_calls() {
        let (tx, clients, dials) = clients();
        let b2 = BrokerName::from("b2");
        for _ in 0..10 {
            assert!(clients.get(&b2).is_some());
        }
        assert_eq!(dials(), 1);
        assert!(clients.get(&BrokerName::from("b9")).is_none());
        // Back at another address (restarted elsewhere): a new connection.
        tx.send_replace(placement("127.0.0.1:7012"));
        assert!(clients.get(&b2).is_some());
        assert!(clients.get(&b2).is_some());
        assert_eq!(dials(), 2);
    }

    #[tokio::test]
    async fn a_connection_is_replaced_before_h2_would_close_it_for_its_resets() {
        let (_tx, clients, dials) = clients();
        let b2 = BrokerName::from("b2");
        for _ in 0..CALLS_PER_CONNECTION {
            clients.get(&b2);
        }
        assert_eq!(dials(), 1);
        clients.get(&b2);
        assert_eq!(dials(), 2);
    }
}
