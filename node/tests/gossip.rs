//! Gossip agents over real UDP sockets on loopback: discovery through a
//! seed, state changes, a graceful leave, and a crash detected by SWIM.

use std::{sync::Arc, time::Duration};

use switchboard_cluster::{
    gossip::Membership,
    membership::{ClusterView, NodeId, NodeState, Role},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn node(name: &str, role: Role) -> NodeId {
    NodeId {
        name: name.into(),
        role,
        gossip: "127.0.0.1:0".parse().unwrap(),
        grpc: format!("127.0.0.1:1{}", &name[1..]),
        state: NodeState::Active,
        boot: rand::random(),
        bump: 0,
    }
}

async fn start(name: &str, role: Role, seeds: Vec<String>) -> (Membership, CancellationToken) {
    let shutdown = CancellationToken::new();
    let m = Membership::start(
        node(name, role),
        "127.0.0.1:0".parse().unwrap(),
        seeds,
        None,
        shutdown.clone(),
    )
    .await
    .unwrap();
    (m, shutdown)
}

/// Waits (bounded) until `pred` holds for the view.
async fn until(
    view: &mut watch::Receiver<Arc<ClusterView>>,
    what: &str,
    pred: impl Fn(&ClusterView) -> bool,
) {
    let waited = tokio::time::timeout(Duration::from_secs(15), view.wait_for(|v| pred(v)))
        .await
        .is_ok();
    assert!(
        waited,
        "timed out waiting until {what}; view: {:?}",
        view.borrow()
    );
}

fn names(v: &ClusterView) -> Vec<String> {
    v.members().map(|m| m.name.clone()).collect()
}

#[tokio::test]
async fn discover_change_state_leave_and_crash() {
    let (b1, _s1) = start("b1", Role::Broker, vec![]).await;
    let seed = vec![b1.addr().to_string()];
    let (b2, _s2) = start("b2", Role::Broker, seed.clone()).await;
    let (_b3, s3) = start("b3", Role::Broker, seed.clone()).await;
    let (g1, _sg) = start("g1", Role::Gateway, seed).await;

    let mut view = g1.view();
    until(&mut view, "everyone is known", |v| {
        names(v) == ["b1", "b2", "b3", "g1"]
    })
    .await;
    assert_eq!(view.borrow().ring().len(), 3);

    // A draining broker leaves the ring but stays a member.
    b2.set_state(NodeState::Draining).await;
    until(&mut view, "b2 drains", |v| {
        v.get("b2").is_some_and(|m| m.state == NodeState::Draining)
    })
    .await;
    assert_eq!(
        view.borrow().ring().brokers().collect::<Vec<_>>(),
        ["b1", "b3"]
    );

    // A graceful shutdown announces the departure.
    s3.cancel();
    until(&mut view, "b3 is gone", |v| v.get("b3").is_none()).await;

    // A crash is found by probing.
    let t0 = tokio::time::Instant::now();
    b1.halt();
    until(&mut view, "b1 is declared down", |v| v.get("b1").is_none()).await;
    let detected = t0.elapsed();
    assert!(detected < Duration::from_secs(15));
    println!("crash detected after {detected:?}");
    drop(b2);
}
