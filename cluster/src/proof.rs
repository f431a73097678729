//! Proof of a broker's name before it counts in the ring. Gossip tells who
//! claims which name; a holder of the gossip key could claim a free name
//! (or advertise another broker's address) and take a share of the ring it
//! cannot serve, since every dialer verifies `NAME.broker.switchboard`. So
//! over mutual TLS, a broker enters this node's ring only once a TLS
//! handshake to the address it advertises has shown a certificate for the
//! name it gossips ([`Proofs`] is the sans-IO record; [`proven_view`]
//! drives it). Until then, and whenever a proof fails, the claim is left
//! out, so an unprovable member never changes anyone's routing.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::membership::{ClusterView, Role};
use switchboard_core::BrokerAddr;

/// How long after a failed proof it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whether the broker at `addr` proves `name`: a TLS handshake with it.
pub type Prover =
    Arc<dyn Fn(&BrokerAddr) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Which brokers' claims (name at gRPC address) were proven.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Proofs {
    proven: BTreeSet<(String, String)>,
}

impl Proofs {
    /// Brokers of `view`, other than this node, whose claim is unproven.
    pub fn unproven(&self, view: &ClusterView) -> Vec<BrokerAddr> {
        let me = view.me().map(|m| m.name.as_str());
        view.members()
            .filter(|m| m.role == Role::Broker && Some(m.name.as_str()) != me)
            .filter(|m| !self.proven.contains(&(m.name.clone(), m.grpc.clone())))
            .map(|m| BrokerAddr {
                name: m.name.clone().into(),
                addr: m.grpc.clone(),
            })
            .collect()
    }

    /// A proof's outcome.
    pub fn record(&mut self, broker: &BrokerAddr, proven: bool) {
        let claim = (broker.name.to_string(), broker.addr.clone());
        if proven {
            self.proven.insert(claim);
        } else {
            self.proven.remove(&claim);
        }
    }

    /// `view` without the brokers whose claim is unproven.
    pub fn filter(&self, view: &ClusterView) -> ClusterView {
        let unproven: Vec<String> = self
            .unproven(view)
            .into_iter()
            .map(|b| b.name.to_string())
            .collect();
        view.clone().without(&unproven)
    }
}

/// `view`, with every broker left out until `prove` has shown its claim;
/// proofs run in `tracker` until `shutdown`, failed ones again after
/// [`RETRY_AFTER`].
pub fn proven_view(
    mut view: watch::Receiver<Arc<ClusterView>>,
    prove: Prover,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<ClusterView>> {
    let mut proofs = Proofs::default();
    let (tx, proven) = watch::channel(Arc::new(proofs.filter(&view.borrow())));
    let (done_tx, mut done) = mpsc::unbounded_channel::<(BrokerAddr, bool)>();
    let spawner = tracker.clone();
    tracker.spawn(async move {
        let mut pending = BTreeMap::<(String, String), ()>::new();
        loop {
            let now = view.borrow_and_update().clone();
            for broker in proofs.unproven(&now) {
                let claim = (broker.name.to_string(), broker.addr.clone());
                if pending.insert(claim, ()).is_some() {
                    continue;
                }
                let (prove, done_tx, stop) = (prove.clone(), done_tx.clone(), shutdown.clone());
                spawner.spawn(async move {
                    let proven = tokio::select! {
                        () = stop.cancelled() => return,
                        proven = prove(&broker) => proven,
                    };
                    if !proven {
                        tracing::warn!(broker = %broker.name, addr = %broker.addr, "broker left out of the ring: its address does not prove its name");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(RETRY_AFTER) => {}
                        }
                    }
                    let _ = done_tx.send((broker, proven));
                });
            }
            tx.send_replace(Arc::new(proofs.filter(&now)));
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
                Some((broker, ok)) = done.recv() => {
                    pending.remove(&(broker.name.to_string(), broker.addr.clone()));
                    proofs.record(&broker, ok);
                }
            }
        }
    });
    proven
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{NodeId, NodeState};

    fn node(name: &str, role: Role, grpc: &str) -> NodeId {
        NodeId {
            name: name.into(),
            role,
            gossip: format!("127.0.0.1:{}", 7000 + grpc.len()).parse().unwrap(),
            grpc: grpc.into(),
            state: NodeState::Active,
            boot: 1,
            bump: 0,
        }
    }

    #[test]
    fn brokers_count_only_once_proven_at_the_address_they_claim() {
        let mut view = ClusterView::new(node("b1", Role::Broker, "h1:7000"));
        view.up(node("b2", Role::Broker, "h2:7000"));
        view.up(node("g1", Role::Gateway, ""));
        let mut proofs = Proofs::default();
        // Not b1 itself, not the gateway: b2 alone waits for its proof.
        let b2 = BrokerAddr {
            name: "b2".into(),
            addr: "h2:7000".into(),
        };
        assert_eq!(proofs.unproven(&view), vec![b2.clone()]);
        let names = |v: &ClusterView| v.ring().brokers().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(names(&proofs.filter(&view)), ["b1"]);
        assert!(proofs.filter(&view).get("g1").is_some());
        proofs.record(&b2, true);
        assert_eq!(names(&proofs.filter(&view)), ["b1", "b2"]);
        // The same name at another address is another claim, unproven.
        view.down(&node("b2", Role::Broker, "h2:7000"));
        view.up(node("b2", Role::Broker, "h9:7000"));
        assert_eq!(names(&proofs.filter(&view)), ["b1"]);
        // A proof that fails later takes the claim back out.
        proofs.record(&b2, false);
        assert!(
            proofs
                .unproven(&view)
                .iter()
                .all(|b| b.name.as_str() == "b2")
        );
    }
}
