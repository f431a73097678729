//! A planned move's election that fails is stood again, not given up
//! (docs/replication.md, "Changing the configuration"): the broker a
//! leader handed its channel to keeps the handed log when its first
//! election finds no majority, and stands on it again when the request
//! comes back. Until session 21 it dropped the log after one try, and the
//! channel was then refused while the old leader's copy was live, and
//! served from here unreplicated after: acknowledged on one broker only.

mod voters;

use std::{sync::Arc, time::Duration};

use switchboard_cluster::{
    membership::{ClusterView, NodeId, NodeState, Role},
    ownership::{Placement, Release},
    replication::Term,
};
use switchboard_core::{BrokerError, BrokerName, Namespaces};
use switchboard_node::{
    BrokerConfig, LocalBroker,
    replica::{election::Elected, election::stand},
    succession::{self, Succession},
};
use tokio_util::sync::CancellationToken;
use voters::{NAMES, addrs, cluster, news, plan, replicating, serve_on, shared_dialer, voter};

fn b(name: &str) -> BrokerName {
    name.into()
}

fn node(name: &str, grpc: std::net::SocketAddr) -> NodeId {
    NodeId {
        name: name.into(),
        role: Role::Broker,
        gossip: "127.0.0.1:1".parse().unwrap(),
        grpc: grpc.to_string(),
        state: NodeState::Active,
        boot: 1,
        bump: 0,
    }
}

/// A `LocalBroker` over `replicas`, replicating through `dial`.
fn broker_over(
    replicas: &Arc<switchboard_node::replica::Replicas>,
    dial: &voters::Dial,
    stop: &CancellationToken,
) -> LocalBroker {
    let broker = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
    replicating(broker, replicas, dial, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_log_whose_election_found_no_majority_stands_again() {
    let mut voters = cluster("handed-again").await;
    let b4 = voter("b4", "handed-again").await;
    let addrs = addrs(&voters);
    addrs.lock().insert(b("b4"), b4.addr);
    let dial = shared_dialer(addrs.clone());
    let stop = CancellationToken::new();

    // b1 leads the channel in term 1, with b2 and b3.
    let b1 = broker_over(&voters[&b("b1")].replicas, &dial, &stop);
    b1.touch(&news()).unwrap();
    let (epoch, created_micros) = b1.epoch_of(&news()).unwrap();
    let r1 = b1.replicated().unwrap();
    let candidacy = r1.replicas.candidacy(&news(), plan(&NAMES, &[])).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let Elected::Leads { config, .. } = stand(&r1.replicas, &*dial, &news(), candidacy, deadline)
        .await
        .unwrap()
    else {
        panic!("b1 was not elected");
    };
    let led = switchboard_node::replica::Epoch {
        id: epoch.clone(),
        created_micros,
    };
    b1.lead_won(r1, &news(), &config, led).unwrap();

    // It hands the channel to b4 (which joined) while b2 and b3 are away.
    let Release::State(handed) = b1.release_for(&news(), "b4", false).unwrap() else {
        panic!("not handed over");
    };
    let b4_broker = broker_over(&b4.replicas, &dial, &stop);
    assert!(b4_broker.adopt(handed).unwrap());
    for name in ["b2", "b3"] {
        voters.get(&b(name)).unwrap().stop.cancel();
    }
    let mut view = ClusterView::new(node("b4", b4.addr));
    for (name, v) in &voters {
        view.up(node(name.as_str(), v.addr));
    }
    let placement = Placement::new(&view, "b4");
    let r4 = b4_broker.replicated().unwrap();

    // No majority of term 1's voters answers: not elected, asked again.
    let first = succession::lead(&b4_broker, r4, &placement, &news()).await;
    assert!(
        matches!(first, Err(BrokerError::NotOwner { owner: None })),
        "{first:?}"
    );
    assert!(r4.replicas.leads(&news()).is_none());

    // b2 and b3 are back: the request comes back, and b4 stands again on
    // the log it was handed, in the same epoch.
    for name in ["b2", "b3"] {
        let v = voters.get_mut(&b(name)).unwrap();
        let (addr, stop) = serve_on(v.replicas.clone()).await;
        (v.addr, v.stop) = (addr, stop);
        addrs.lock().insert(b(name), addr);
    }
    let again = succession::lead(&b4_broker, r4, &placement, &news()).await;
    assert_eq!(again, Ok(Succession::Leads), "served unreplicated");
    assert!(r4.replicas.leads(&news()) > Some(Term(1)));
    assert_eq!(b4_broker.epoch_of(&news()).map(|e| e.0), Some(epoch));
    stop.cancel();
    for v in voters.values() {
        v.stop.cancel();
    }
    b4.stop.cancel();
}
