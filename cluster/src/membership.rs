//! Membership as data: who a node is ([`NodeId`]), and the cluster as one
//! node sees it ([`ClusterView`]), from which the ring of active brokers
//! follows. Sans-IO: the gossip agent ([`crate::gossip`]) feeds it foca's
//! notifications; tests and simulations feed it directly.
//!
//! A node's identity on the wire carries its role, gRPC address, state and
//! boot id, but the ring and every lookup key on the stable `name`: a node
//! that restarts, changes state or refutes a suspicion keeps its place, and
//! a healed partition does not reshuffle channels.

use std::{collections::BTreeMap, fmt, net::SocketAddr, time::Duration};

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
///
/// A name belongs to one live identity at a time. An identity that claims
/// a name already live at another gossip address is a rival: it is refused
/// (kept aside, counted) and neither its arrival nor its departure touches
/// the holder's entry. The holder is the identity with the oldest boot, so
/// every node settles on the same one whatever order news arrives in; a
/// node never gives up its own name in its own view. At one address, the
/// newest identity wins: that is a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// This node's name.
    me: String,
    members: BTreeMap<String, NodeId>,
    /// Live identities refused because another holds their name.
    rivals: BTreeMap<String, Vec<NodeId>>,
    /// How many rival identities were refused.
    conflicts: u64,
    /// How often this node learned that others suspected it or declared it
    /// down (it refuted the suspicion, or rejoined). Each time, others may
    /// have taken over what it held meanwhile.
    doubts: u64,
}

/// A node found its own name live at another address, held there by an
/// older identity: it must not serve under that name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("another member named {name} is live at {addr}; refusing to start")]
pub struct IdentityConflict {
    pub name: String,
    /// The other member's gossip address.
    pub addr: SocketAddr,
}

/// Whether `a` keeps a name against `b`, a live identity at another address.
fn holds(a: &NodeId, b: &NodeId) -> bool {
    (a.boot, a.gossip) < (b.boot, b.gossip)
}

impl ClusterView {
    pub fn new(me: NodeId) -> Self {
        let mut view = Self {
            me: me.name.clone(),
            ..Self::default()
        };
        view.up(me);
        view
    }

    /// A member is up (or changed identity): at one address the newest
    /// identity wins; at another, the name's holder does.
    pub fn up(&mut self, id: NodeId) -> bool {
        let Some(cur) = self.members.get(&id.name) else {
            self.members.insert(id.name.clone(), id);
            return true;
        };
        if cur.gossip == id.gossip {
            if (cur.boot, cur.bump) > (id.boot, id.bump) || cur == &id {
                return false;
            }
            self.members.insert(id.name.clone(), id);
            return true;
        }
        if id.name == self.me || holds(cur, &id) {
            self.add_rival(id);
            return false;
        }
        // An older identity of the name: it holds the name everywhere, so
        // here too; the one known so far becomes its rival.
        let displaced = self.members.insert(id.name.clone(), id.clone());
        self.rivals
            .entry(id.name.clone())
            .or_default()
            .retain(|r| r.gossip != id.gossip);
        if let Some(displaced) = displaced {
            self.add_rival(displaced);
        }
        true
    }

    fn add_rival(&mut self, id: NodeId) {
        let rivals = self.rivals.entry(id.name.clone()).or_default();
        match rivals.iter_mut().find(|r| r.gossip == id.gossip) {
            Some(r) if (r.boot, r.bump) >= (id.boot, id.bump) => {}
            Some(r) => {
                if r.boot != id.boot {
                    self.conflicts += 1;
                }
                *r = id;
            }
            None => {
                self.conflicts += 1;
                rivals.push(id);
            }
        }
    }

    /// A member is down; ignored if a newer identity of it is known. A
    /// rival's departure changes nothing; the holder's lets the oldest
    /// live rival take the name.
    pub fn down(&mut self, id: &NodeId) -> bool {
        if let Some(rivals) = self.rivals.get_mut(&id.name) {
            rivals.retain(|r| r.gossip != id.gossip || (r.boot, r.bump) > (id.boot, id.bump));
        }
        match self.members.get(&id.name) {
            Some(cur) if cur.gossip == id.gossip && (cur.boot, cur.bump) <= (id.boot, id.bump) => {
                self.members.remove(&id.name);
                let heir = self.rivals.get_mut(&id.name).and_then(|rivals| {
                    let oldest = (0..rivals.len()).min_by(|&a, &b| {
                        (rivals[a].boot, rivals[a].gossip).cmp(&(rivals[b].boot, rivals[b].gossip))
                    })?;
                    Some(rivals.swap_remove(oldest))
                });
                if let Some(heir) = heir {
                    self.members.insert(heir.name.clone(), heir);
                }
                true
            }
            _ => false,
        }
    }

    /// This view without the members named (never this node itself).
    pub fn without(mut self, names: &[String]) -> Self {
        let me = self.me.clone();
        self.members
            .retain(|name, _| *name == me || !names.contains(name));
        self
    }

    /// This view with every other member left out.
    pub fn alone(mut self) -> Self {
        let me = self.me.clone();
        self.members.retain(|name, _| *name == me);
        self.rivals.clear();
        self
    }

    /// This node's own entry.
    pub fn me(&self) -> Option<&NodeId> {
        self.members.get(&self.me)
    }

    /// How many rival identities were refused so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// A live identity that holds a name against `name`'s entry here, if
    /// any (the newest refused).
    pub fn rival(&self, name: &str) -> Option<&NodeId> {
        self.rivals.get(name)?.last()
    }

    /// This node's own name, live at another address under an older
    /// identity: this node is the one to give way.
    pub fn self_conflict(&self) -> Option<IdentityConflict> {
        let me = self.members.get(&self.me)?;
        let holder = self
            .rivals
            .get(&self.me)?
            .iter()
            .filter(|r| holds(r, me))
            .min_by_key(|r| (r.boot, r.gossip))?;
        Some(IdentityConflict {
            name: self.me.clone(),
            addr: holder.gossip,
        })
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

/// When a refused identity is worth a log line again: once per name per
/// [`ConflictLog::INTERVAL`], so that a rival gossiping every half second
/// does not flood the log.
#[derive(Debug, Default)]
pub struct ConflictLog {
    last: BTreeMap<String, tokio::time::Instant>,
}

impl ConflictLog {
    pub const INTERVAL: Duration = Duration::from_secs(60);

    pub fn should_log(&mut self, name: &str, now: tokio::time::Instant) -> bool {
        match self.last.get(name) {
            Some(at) if now.duration_since(*at) < Self::INTERVAL => false,
            _ => {
                self.last.insert(name.to_owned(), now);
                true
            }
        }
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

    fn at(mut id: NodeId, gossip: &str) -> NodeId {
        id.gossip = gossip.parse().unwrap();
        id
    }

    #[test]
    fn a_second_member_with_a_live_name_is_refused_and_its_departure_changes_nothing() {
        let mut v = ClusterView::new(id("g1", Role::Gateway, NodeState::Active, 1, 0));
        let real = at(
            id("b1", Role::Broker, NodeState::Active, 5, 0),
            "10.0.0.1:7946",
        );
        v.up(real.clone());
        let ring = v.ring().version();
        let mut impostor = at(
            id("b1", Role::Broker, NodeState::Active, 9, 0),
            "10.0.0.2:7946",
        );
        impostor.grpc = "10.0.0.2:7000".into();
        assert!(!v.up(impostor.clone()));
        assert_eq!(v.get("b1"), Some(&real));
        assert_eq!(v.conflicts(), 1);
        assert_eq!(v.rival("b1"), Some(&impostor));
        // Its updates are refused too, and counted once per identity.
        assert!(!v.up(impostor.with_state(NodeState::Draining)));
        assert_eq!(v.conflicts(), 1);
        assert!(!v.down(&impostor.with_state(NodeState::Draining)));
        assert_eq!(v.get("b1"), Some(&real));
        assert_eq!(v.ring().version(), ring);
        assert_eq!(v.rival("b1"), None);
        assert!(v.self_conflict().is_none());
    }

    #[test]
    fn the_oldest_identity_holds_the_name_whatever_the_order() {
        let real = at(
            id("b1", Role::Broker, NodeState::Active, 5, 0),
            "10.0.0.1:7946",
        );
        let impostor = at(
            id("b1", Role::Broker, NodeState::Active, 9, 0),
            "10.0.0.2:7946",
        );
        let mut v = ClusterView::new(id("g1", Role::Gateway, NodeState::Active, 1, 0));
        assert!(v.up(impostor.clone()));
        assert!(v.up(real.clone()), "the older identity takes the name");
        assert_eq!(v.get("b1"), Some(&real));
        assert!(!v.down(&impostor));
        assert_eq!(v.get("b1"), Some(&real));
    }

    #[test]
    fn a_restart_is_accepted_at_once_at_the_same_address_and_after_the_old_is_down_elsewhere() {
        let mut v = ClusterView::new(id("g1", Role::Gateway, NodeState::Active, 1, 0));
        let old = at(
            id("b1", Role::Broker, NodeState::Active, 5, 0),
            "10.0.0.1:7946",
        );
        v.up(old.clone());
        // Same address, new boot: the restart case.
        let restarted = at(
            id("b1", Role::Broker, NodeState::Active, 7, 0),
            "10.0.0.1:7946",
        );
        assert!(v.up(restarted.clone()));
        assert_eq!(v.conflicts(), 0);
        // A new address (a pod with a new IP) waits for the old to be down.
        let moved = at(
            id("b1", Role::Broker, NodeState::Active, 8, 0),
            "10.0.0.9:7946",
        );
        assert!(!v.up(moved.clone()));
        assert_eq!(v.get("b1"), Some(&restarted));
        assert!(v.down(&restarted));
        assert_eq!(v.get("b1"), Some(&moved), "the live rival takes the name");
        assert!(v.down(&moved));
        assert!(v.get("b1").is_none());
    }

    #[test]
    fn a_node_that_finds_its_name_held_elsewhere_gives_way() {
        let me = at(
            id("b1", Role::Broker, NodeState::Active, 9, 0),
            "10.0.0.2:7946",
        );
        let mut v = ClusterView::new(me.clone());
        let holder = at(
            id("b1", Role::Broker, NodeState::Active, 5, 0),
            "10.0.0.1:7946",
        );
        assert!(!v.up(holder.clone()));
        assert_eq!(
            v.get("b1"),
            Some(&me),
            "a node keeps its own name in its view"
        );
        assert_eq!(
            v.self_conflict(),
            Some(IdentityConflict {
                name: "b1".into(),
                addr: holder.gossip
            })
        );
        assert_eq!(
            v.self_conflict().unwrap().to_string(),
            "another member named b1 is live at 10.0.0.1:7946; refusing to start"
        );
        // The holder, for its part, sees a newer rival and carries on.
        let mut h = ClusterView::new(holder.clone());
        h.up(me);
        assert!(h.self_conflict().is_none());
        assert_eq!(h.get("b1"), Some(&holder));
        // The conflict ends when the holder is down.
        assert!(!v.down(&holder));
        assert!(v.self_conflict().is_none());
    }

    #[test]
    fn conflicts_are_logged_once_per_name_per_interval() {
        let mut log = ConflictLog::default();
        let t = tokio::time::Instant::now();
        assert!(log.should_log("b1", t));
        assert!(!log.should_log("b1", t + Duration::from_secs(1)));
        assert!(log.should_log("b2", t + Duration::from_secs(1)));
        assert!(log.should_log("b1", t + ConflictLog::INTERVAL));
    }
}
