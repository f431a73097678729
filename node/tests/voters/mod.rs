//! Three brokers' replication services in this process, each on a real
//! gRPC port with its own data directory, for the replication tests.

#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use parking_lot::Mutex;
use switchboard_cluster::replication::Plan;
use switchboard_core::{BrokerName, ChannelName, Namespaces};
use switchboard_node::{
    BrokerConfig, LocalBroker,
    replica::Replicas,
    server::{Services, incoming, serve},
};
use switchboard_proto::replica::v1::replica_client::ReplicaClient;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Channel;

pub(crate) const NAMES: [&str; 3] = ["b1", "b2", "b3"];

pub(crate) struct Voter {
    pub(crate) replicas: Arc<Replicas>,
    pub(crate) addr: SocketAddr,
    pub(crate) stop: CancellationToken,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) async fn voter(name: &str, tag: &str) -> Voter {
    voter_in(name, tag, Namespaces::permissive()).await
}

/// [`voter`] with the namespaces `ns`.
pub(crate) async fn voter_in(name: &str, tag: &str, ns: Namespaces) -> Voter {
    let dir = std::env::temp_dir().join(format!("sb-elect-{tag}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let replicas = Arc::new(Replicas::open_in(name.into(), ns, Some(&dir)).unwrap());
    let (addr, stop) = serve_on(replicas.clone()).await;
    Voter {
        replicas,
        addr,
        stop,
        _dir: TempDir(dir),
    }
}

/// Serves `replicas` on a new port until the token.
pub(crate) async fn serve_on(replicas: Arc<Replicas>) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let services = Services {
        broker: LocalBroker::new(BrokerConfig::default(), Namespaces::permissive()),
        handoff: None,
        replicas: Some(replicas),
    };
    let serving = serve(
        incoming(listener),
        services,
        TaskTracker::new(),
        stop.clone(),
    );
    tokio::spawn(serving);
    (addr, stop)
}

/// Where each broker is now (a restarted one moves).
pub(crate) type Addrs = Arc<Mutex<HashMap<BrokerName, SocketAddr>>>;

pub(crate) fn addrs(voters: &HashMap<BrokerName, Voter>) -> Addrs {
    Arc::new(Mutex::new(
        voters.iter().map(|(n, v)| (n.clone(), v.addr)).collect(),
    ))
}

/// A shared dialer, as leaders hold it.
pub(crate) type Dial = switchboard_node::replica::peer_stream::SharedDial;

/// `broker` replicating over `replicas` (R = 2), reaching the others
/// through `dial`; its streams end with `stop`.
pub(crate) fn replicating(
    broker: LocalBroker,
    replicas: &Arc<Replicas>,
    dial: &Dial,
    stop: &CancellationToken,
) -> LocalBroker {
    use switchboard_node::{
        local_broker::replicated::Replicated, replica::peer_stream::PeerStreams,
    };
    broker.set_replicated(Replicated {
        replicas: replicas.clone(),
        streams: PeerStreams::new(
            replicas.clone(),
            dial.clone(),
            TaskTracker::new(),
            stop.clone(),
        ),
        dial: dial.clone(),
        factor: 2,
        lost_majority: Default::default(),
        deferrals: Default::default(),
    });
    broker
}

/// A dialer that follows `addrs`.
pub(crate) fn shared_dialer(addrs: Addrs) -> switchboard_node::replica::peer_stream::SharedDial {
    Arc::new(move |name: &BrokerName| {
        let addr = *addrs.lock().get(name)?;
        let channel = switchboard_cluster::dialer::endpoint(&addr.to_string())
            .ok()?
            .connect_lazy();
        Some(ReplicaClient::new(channel))
    })
}

pub(crate) async fn cluster(tag: &str) -> HashMap<BrokerName, Voter> {
    let mut voters = HashMap::new();
    for name in NAMES {
        voters.insert(BrokerName::from(name), voter(name, tag).await);
    }
    voters
}

/// How `me` reaches the others (not itself: its own register is local).
pub(crate) fn dialer(
    voters: &HashMap<BrokerName, Voter>,
) -> impl Fn(&BrokerName) -> Option<ReplicaClient<Channel>> + Sync + use<> {
    let addrs: HashMap<BrokerName, SocketAddr> =
        voters.iter().map(|(n, v)| (n.clone(), v.addr)).collect();
    move |name: &BrokerName| {
        let addr = addrs.get(name)?;
        let channel = switchboard_cluster::dialer::endpoint(&addr.to_string())
            .ok()?
            .connect_lazy();
        Some(ReplicaClient::new(channel))
    }
}

pub(crate) fn plan(order: &[&str], down: &[&str]) -> Plan {
    Plan {
        failover: order.iter().map(|&b| b.into()).collect(),
        first: vec![],
        down: down.iter().map(|&b| b.into()).collect(),
        replicas: 2,
    }
}

pub(crate) fn news() -> ChannelName {
    ChannelName::new("news").unwrap()
}
