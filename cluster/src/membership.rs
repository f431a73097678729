//! Membership as data: who a node is ([`NodeId`]), and the cluster as one
//! node sees it ([`ClusterView`]), from which the ring of active brokers
//! follows. Sans-IO: the gossip agent ([`crate::gossip`]) feeds it foca's
//! notifications; tests and simulations feed it directly.
//!
//! A node's identity on the wire carries its role, gRPC address, state and
//! boot id, but the ring and every lookup key on the stable `name`: a node
//! that restarts, changes state or refutes a suspicion keeps its place, and
//! a healed partition does not reshuffle channels.

use std::{collections::BTreeMap, fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::ring::Ring;
use switchboard_core::ids::BrokerAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Gateway,
    Broker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Up, not yet taking traffic.
    Joining,
    /// In service; a broker in this state owns its share of the ring.
    Active,
    /// Leaving: hands its work over, then goes.
    Draining,
}

/// A node as gossip carries it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub role: Role,
    /// UDP address gossip reaches this node on.
    pub gossip: SocketAddr,
    /// gRPC address (`host:port`) for brokers; empty for gateways.
    pub grpc: String,
    pub state: NodeState,
    /// Random per process start: a restarted node wins over its old self.
    pub boot: u64,
    /// Bumped on every change of this node's identity.
    pub bump: u32,
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({:?},{:?},{}#{})",
            self.name,
            self.role,
            self.state,
            self.boot % 10_000,
            self.bump
        )
    }
}

impl NodeId {
    /// The same node in another state; wins over the current identity.
    pub fn with_state(&self, state: NodeState) -> Self {
        Self {
            state,
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        }
    }
}

impl foca::Identity for NodeId {
    // foca tells identities apart by address: a seed known only by its
    // socket address must be reachable by it. The view keys on names.
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.boot, self.bump) > (adversary.boot, adversary.bump)
    }
}

/// The live members one node knows of, itself included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    members: BTreeMap<String, NodeId>,
    /// How often this node learned that others suspected it or declared it
    /// down (it refuted the suspicion, or rejoined). Each time, others may
    /// have taken over what it held meanwhile.
    doubts: u64,
}

impl ClusterView {
    pub fn new(me: NodeId) -> Self {
        let mut view = Self::default();
        view.up(me);
        view
    }

    /// A member is up (or changed identity): the newest identity wins.
    pub fn up(&mut self, id: NodeId) -> bool {
        match self.members.get(&id.name) {
            Some(old) if (old.boot, old.bump) > (id.boot, id.bump) => false,
            Some(old) if old == &id => false,
            _ => {
                self.members.insert(id.name.clone(), id);
                true
            }
        }
    }

    /// A member is down; ignored if a newer identity of it is known.
    pub fn down(&mut self, id: &NodeId) -> bool {
        match self.members.get(&id.name) {
            Some(cur) if (cur.boot, cur.bump) <= (id.boot, id.bump) => {
                self.members.remove(&id.name);
                true
            }
            _ => false,
        }
    }

    /// Others suspected this node or declared it down, and it found out.
    pub fn doubted(&mut self) {
        self.doubts += 1;
    }

    /// How many times [`Self::doubted`] was called.
    pub fn doubts(&self) -> u64 {
        self.doubts
    }

    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.members.values()
    }

    pub fn get(&self, name: &str) -> Option<&NodeId> {
        self.members.get(name)
    }

    /// Brokers that own a share of the ring: active ones.
    pub fn active_brokers(&self) -> Vec<BrokerAddr> {
        self.members
            .values()
            .filter(|m| m.role == Role::Broker && m.state == NodeState::Active)
            .map(|m| BrokerAddr {
                name: m.name.clone().into(),
                addr: m.grpc.clone(),
            })
            .collect()
    }

    /// The ring every node with this view agrees on.
    pub fn ring(&self) -> Ring {
        Ring::new(self.active_brokers().into_iter().map(|b| b.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, role: Role, state: NodeState, boot: u64, bump: u32) -> NodeId {
        NodeId {
            name: name.into(),
            role,
            gossip: "127.0.0.1:1".parse().unwrap(),
            grpc: format!("{name}:7000"),
            state,
            boot,
            bump,
        }
    }

    #[test]
    fn ring_has_only_active_brokers_and_keys_on_names() {
        let mut v = ClusterView::new(id("g1", Role::Gateway, NodeState::Active, 1, 0));
        v.up(id("b1", Role::Broker, NodeState::Active, 1, 0));
        v.up(id("b2", Role::Broker, NodeState::Joining, 1, 0));
        v.up(id("b3", Role::Broker, NodeState::Active, 1, 0));
        assert_eq!(v.ring().brokers().collect::<Vec<_>>(), ["b1", "b3"]);
        let before = v.ring().version();
        // b1 refutes a suspicion (a bump) and b3 restarts (a new boot):
        // same names, same ring.
        v.up(id("b1", Role::Broker, NodeState::Active, 1, 5));
        v.up(id("b3", Role::Broker, NodeState::Active, 9, 0));
        assert_eq!(v.ring().version(), before);
        v.up(id("b2", Role::Broker, NodeState::Active, 1, 1));
        assert_eq!(v.ring().len(), 3);
        v.up(id("b1", Role::Broker, NodeState::Draining, 1, 6));
        assert_eq!(v.ring().brokers().collect::<Vec<_>>(), ["b2", "b3"]);
    }

    #[test]
    fn stale_news_does_not_undo_newer() {
        let mut v = ClusterView::default();
        v.up(id("b1", Role::Broker, NodeState::Active, 2, 0));
        assert!(
            !v.up(id("b1", Role::Broker, NodeState::Draining, 1, 9)),
            "older boot loses"
        );
        assert!(
            !v.down(&id("b1", Role::Broker, NodeState::Active, 1, 3)),
            "old incarnation down"
        );
        assert!(v.get("b1").is_some());
        assert!(v.down(&id("b1", Role::Broker, NodeState::Active, 2, 0)));
        assert!(v.get("b1").is_none());
    }
}
