//! Channel ownership between brokers, as data and plain decisions (sans-IO).
//!
//! A broker serves a channel only while its own ring names it the owner.
//! When ownership moves (a broker joins, drains or dies), the new owner
//! asks the broker that held the channel before for its state: that broker
//! hands over a [`Snapshot`] and *fences* the channel, refusing it from then
//! on, so that during the moments when nodes disagree on the ring no two
//! brokers accept publications to the same channel. Gateways that asked the
//! wrong broker are told [`switchboard_core::BrokerError::NotOwner`] and ask again once
//! their ring agrees.
//!
//! Who held a channel before is derived from the view alone: the owner on
//! the ring of *live* brokers (active or draining) without the asking
//! broker. That is the previous owner when a broker joined (the ring
//! without it) and when one drains (it is still live, and owned the
//! channel); after a crash the dead owner is not live, nobody holds the
//! state, and the channel goes on in a new epoch that clients are told of.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;

use crate::{
    membership::{ClusterView, NodeState, Role},
    replication::{ReplicaConfig, Term},
    ring::Ring,
};
use switchboard_core::{ChannelName, ids::BrokerAddr};

/// One retained publication in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub offset: u64,
    /// Age at hand-over: the entry expires at the new owner when it would
    /// have at the old one.
    pub age: Duration,
    pub frame: Bytes,
}

/// What a channel's order needs to go on at another broker. Presence is
/// soft state and is rebuilt by gateways when they resubscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub channel: ChannelName,
    pub epoch: String,
    /// When the epoch began (wall clock, µs since the Unix epoch): of two
    /// copies of a channel (after a partition), the newer epoch wins.
    pub created_micros: u64,
    pub offset: u64,
    /// Oldest first.
    pub history: Vec<SnapshotEntry>,
    /// The replication term the copy is led in, or else was last led or
    /// followed in; zero for a copy started and served unreplicated. Of two
    /// copies, the one of the higher term wins whatever their epochs: it
    /// was chosen by a majority of the channel's voters after the other
    /// (docs/replication.md, "Which copy wins").
    pub term: Term,
    /// `(idempotency key, offset)` of this epoch's keyed publications still
    /// in the window (at most [`MAX_HANDED_KEYS`], the newest): the new
    /// owner answers a retry with the first position instead of publishing
    /// it again.
    pub keys: Vec<(String, u64)>,
    /// The configuration of the term the sender led, when it stepped down
    /// to hand the channel over (a planned move): the copy holds all that
    /// may have been committed in that term, and the receiver may stand on
    /// it with the copy as its replica log ([`ReplicaLog::handed`]).
    ///
    /// [`ReplicaLog::handed`]: crate::replication::ReplicaLog::handed
    pub handed: Option<ReplicaConfig>,
    /// With `handed`, from a follower handing its replica back to the
    /// term's leader (restarted without its own): the offset it knew
    /// committed; what lies after may not have been
    /// ([`ReplicaLog::handed_back`]). `None`: a leader's hand-over.
    ///
    /// [`ReplicaLog::handed_back`]: crate::replication::ReplicaLog::handed_back
    pub handed_committed: Option<u64>,
}

impl Snapshot {
    pub fn rank(&self) -> CopyRank<'_> {
        CopyRank {
            term: self.term,
            epoch: &self.epoch,
            created_micros: self.created_micros,
            offset: self.offset,
        }
    }
}

/// What decides which of two copies of a channel a broker keeps (after a
/// partition, a freeze, a restart): the replication term, then the epoch,
/// then the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRank<'a> {
    /// The term the copy is led in here; zero if unreplicated.
    pub term: Term,
    pub epoch: &'a str,
    pub created_micros: u64,
    pub offset: u64,
}

impl CopyRank<'_> {
    /// Whether this copy replaces `held`. A later term wins whatever the
    /// epochs: a majority of the channel's voters chose it after the
    /// other's, so it holds everything acknowledged there, and a copy served
    /// unreplicated (term zero) never replaces one that is replicated.
    /// Within a term, a newer epoch wins, or the same epoch further on.
    pub fn supersedes(&self, held: &CopyRank<'_>) -> bool {
        if self.term != held.term {
            return self.term > held.term;
        }
        (self.created_micros > held.created_micros && self.epoch != held.epoch)
            || (self.epoch == held.epoch && self.offset > held.offset)
    }
}

/// Most idempotency keys one channel's [`Snapshot`] carries: with keys of
/// up to 256 bytes, about 2.6 MB, well within a hand-over message.
pub const MAX_HANDED_KEYS: usize = 10_000;

/// A previous holder's answer to "release this channel to me".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The state; the holder is now fenced for the channel.
    State(Snapshot),
    /// Nothing was held (the holder is now fenced all the same).
    NotHeld,
    /// Handed to this broker earlier: ask it.
    MovedTo(String),
}

/// See [`Placement::recheck_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    /// Others doubted this broker: check every channel.
    everything: bool,
    /// Brokers that appeared since the last view.
    appeared: Vec<String>,
}

/// The rings one broker derives from its view, rebuilt when the view
/// changes rather than per request.
#[derive(Debug, Clone)]
pub struct Placement {
    me: String,
    /// Active brokers: who owns what.
    active: Arc<Ring>,
    /// Live brokers (active or draining) other than `me`: who held a
    /// channel before `me`.
    others: Arc<Ring>,
    addrs: BTreeMap<String, String>,
    /// The view's count of times others doubted this broker.
    doubts: u64,
    /// Brokers live in some view since this broker started (it
    /// included), less those that left by draining: see
    /// [`Placement::brokers_seen`].
    seen: Arc<Seen>,
    /// Live brokers that are draining.
    draining: BTreeSet<String>,
}

/// The brokers seen, and their ring, built when first asked for.
#[derive(Debug)]
struct Seen {
    names: BTreeSet<String>,
    ring: std::sync::OnceLock<Ring>,
}

impl Seen {
    fn of(names: BTreeSet<String>) -> Arc<Self> {
        Arc::new(Self {
            names,
            ring: std::sync::OnceLock::new(),
        })
    }
}

impl Placement {
    pub fn new(view: &ClusterView, me: &str) -> Self {
        let live: Vec<&crate::membership::NodeId> = view
            .members()
            .filter(|m| {
                m.role == Role::Broker && matches!(m.state, NodeState::Active | NodeState::Draining)
            })
            .collect();
        Self {
            me: me.to_owned(),
            active: Arc::new(view.ring()),
            others: Arc::new(Ring::new(
                live.iter().filter(|m| m.name != me).map(|m| m.name.clone()),
            )),
            addrs: live
                .iter()
                .map(|m| (m.name.clone(), m.grpc.clone()))
                .collect(),
            doubts: view.doubts(),
            seen: Seen::of(
                live.iter()
                    .map(|m| m.name.clone())
                    .chain(std::iter::once(me.to_owned()))
                    .collect(),
            ),
            draining: live
                .iter()
                .filter(|m| m.state == NodeState::Draining)
                .map(|m| m.name.clone())
                .collect(),
        }
    }

    /// This placement, remembering the brokers `before` (the view this one
    /// follows) had seen, but for those that drained and left since.
    pub fn after(mut self, before: &Placement) -> Self {
        let left = |b: &String| before.draining.contains(b) && !self.is_live(b);
        let seen: BTreeSet<String> = before
            .seen
            .names
            .iter()
            .filter(|b| !left(b))
            .chain(self.seen.names.iter())
            .cloned()
            .collect();
        // Most views change no one's standing: keep the ring built.
        self.seen = if seen == before.seen.names {
            before.seen.clone()
        } else {
            Seen::of(seen)
        };
        self
    }

    /// This placement, also counting `remembered` as seen: the brokers
    /// seen before a restart (kept in the data directory), so that a
    /// broker restarted while cut off from the others is not a cluster
    /// of one.
    pub fn remembering<'a>(mut self, remembered: impl IntoIterator<Item = &'a String>) -> Self {
        let mut seen = self.seen.names.clone();
        seen.extend(remembered.into_iter().cloned());
        self.seen = Seen::of(seen);
        self
    }

    /// The brokers seen (see [`Placement::brokers_seen`]), by name.
    pub fn seen(&self) -> &BTreeSet<String> {
        &self.seen.names
    }

    /// `channel`'s failover order over every broker seen, reachable or
    /// not: whom its first term is decided by
    /// ([`crate::replication::Plan::first`]).
    pub fn first_order(&self, channel: &str) -> Vec<switchboard_core::BrokerName> {
        self.seen
            .ring
            .get_or_init(|| Ring::new(self.seen.names.iter().cloned()))
            .failover(channel)
            .map(switchboard_core::BrokerName::from)
            .collect()
    }

    /// The broker that would own `channel` were every broker seen live,
    /// if that is neither this broker nor live here: who may hold the
    /// channel while this broker's view has lost it (it died, or gossip has
    /// it down for a moment).
    pub fn missing_holder(&self, channel: &str) -> Option<switchboard_core::BrokerName> {
        let holder = self.first_order(channel).into_iter().next()?;
        (holder.as_str() != self.me && !self.is_live(holder.as_str())).then_some(holder)
    }

    /// How many brokers this broker has seen live since it started, less
    /// those that drained and left: the cluster as far as it knows. One
    /// that died or is cut off still counts. A broker alone since it
    /// started is a cluster of one, not one cut off from the others
    /// (docs/replication.md "A lost majority").
    pub fn brokers_seen(&self) -> usize {
        self.seen.names.len()
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The version of the ring of active brokers (equal on nodes that see
    /// the same brokers).
    pub fn ring_version(&self) -> u64 {
        self.active.version()
    }

    /// The owner of `channel` on the ring of active brokers.
    pub fn owner(&self, channel: &str) -> Option<&str> {
        self.active.owner(channel)
    }

    /// The active brokers in the order they would own `channel` (the owner
    /// first): whom its replica set is drawn from.
    pub fn failover(&self, channel: &str) -> Vec<switchboard_core::BrokerName> {
        self.active
            .failover(channel)
            .map(switchboard_core::BrokerName::from)
            .collect()
    }

    /// Whether this broker is on the ring of active brokers (it is not
    /// while it drains).
    pub fn in_ring(&self) -> bool {
        self.active.brokers().any(|b| b == self.me)
    }

    /// Whether this broker may serve `channel` now.
    pub fn owns(&self, channel: &str) -> bool {
        self.owner(channel) == Some(self.me.as_str())
    }

    /// Where this broker, as `channel`'s new owner, finds its state.
    pub fn source(&self, channel: &str) -> Option<BrokerAddr> {
        self.others.owner(channel).and_then(|name| self.addr(name))
    }

    /// A live broker's gRPC address.
    pub fn addr(&self, name: &str) -> Option<BrokerAddr> {
        self.addrs.get(name).map(|addr| BrokerAddr {
            name: name.into(),
            addr: addr.clone(),
        })
    }

    /// See [`ClusterView::doubts`].
    pub fn doubts(&self) -> u64 {
        self.doubts
    }

    pub fn is_live(&self, name: &str) -> bool {
        self.addrs.contains_key(name)
    }

    /// Live brokers here that were not live in `before`: brokers that
    /// joined, or came back after this broker had counted them out (and
    /// they, perhaps, it).
    pub fn appeared(&self, before: &Placement) -> Vec<String> {
        self.addrs
            .keys()
            .filter(|name| !before.is_live(name) && *name != &self.me)
            .cloned()
            .collect()
    }

    /// For a channel held here: the broker that may hold a newer copy of
    /// it, if that is one of `appeared`. A broker that came back from the
    /// other side of a partition took over this broker's channels there.
    pub fn to_verify(&self, channel: &str, appeared: &[String]) -> Option<String> {
        let source = self.others.owner(channel)?;
        appeared
            .iter()
            .any(|a| a == source)
            .then(|| source.to_owned())
    }

    /// What to check again now that the view moved on from `before`, worked
    /// out once per view change (None: nothing). A broker that appeared may
    /// have taken over channels held here while each side counted the other
    /// out; and when others doubted this broker (it had to refute a
    /// suspicion, or was declared down), its own view may never have shown
    /// the others leaving, yet they may have gone on without it: then every
    /// channel is checked.
    pub fn recheck_since(&self, before: &Placement) -> Option<Recheck> {
        let recheck = Recheck {
            everything: self.doubts > before.doubts,
            appeared: self.appeared(before),
        };
        (recheck.everything || !recheck.appeared.is_empty()).then_some(recheck)
    }

    /// For a channel held here: the broker to check with before serving it
    /// again, if `recheck` calls for one: the broker that would have taken
    /// the channel over while this one was counted out.
    pub fn verify_with(&self, channel: &str, recheck: &Recheck) -> Option<String> {
        if recheck.everything {
            return self.others.owner(channel).map(str::to_owned);
        }
        self.to_verify(channel, &recheck.appeared)
    }

    /// Channels held here that belong to another live broker, by owner:
    /// what this broker should ask them to claim.
    pub fn misplaced<'a>(
        &self,
        held: impl IntoIterator<Item = &'a ChannelName>,
    ) -> BTreeMap<String, Vec<ChannelName>> {
        let mut out: BTreeMap<String, Vec<ChannelName>> = BTreeMap::new();
        for channel in held {
            if let Some(owner) = self.owner(channel.as_str())
                && owner != self.me
                && self.is_live(owner)
            {
                out.entry(owner.to_owned())
                    .or_default()
                    .push(channel.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::NodeId;
    use switchboard_core::BrokerName;

    fn copy(term: u64, epoch: &str, created_micros: u64, offset: u64) -> CopyRank<'_> {
        CopyRank {
            term: Term(term),
            epoch,
            created_micros,
            offset,
        }
    }

    #[test]
    fn a_later_term_wins_then_a_newer_epoch_then_further_on() {
        // Unreplicated (R = 1): a newer epoch, or the same one further on.
        assert!(copy(0, "new", 2, 0).supersedes(&copy(0, "old", 1, 9)));
        assert!(!copy(0, "old", 1, 9).supersedes(&copy(0, "new", 2, 0)));
        assert!(copy(0, "e", 1, 10).supersedes(&copy(0, "e", 1, 9)));
        assert!(!copy(0, "e", 1, 9).supersedes(&copy(0, "e", 1, 9)));
        // A fresh epoch served unreplicated (a broker that lost its log)
        // never replaces the copy a replica set leads, however new.
        assert!(!copy(0, "fresh", 9, 0).supersedes(&copy(2, "e", 1, 37)));
        // A later term wins, even over a longer copy of an older term
        // (what a frozen leader acknowledged alone was never committed).
        assert!(copy(3, "e", 1, 30).supersedes(&copy(2, "e", 1, 40)));
        assert!(!copy(1, "e", 1, 40).supersedes(&copy(2, "e", 1, 30)));
    }

    fn broker(name: &str, state: NodeState) -> NodeId {
        NodeId {
            name: name.into(),
            role: Role::Broker,
            gossip: "127.0.0.1:1".parse().unwrap(),
            grpc: format!("{name}:7000"),
            state,
            boot: 1,
            bump: 0,
        }
    }

    fn view(members: &[(&str, NodeState)]) -> ClusterView {
        let mut v = ClusterView::default();
        for (name, state) in members {
            v.up(broker(name, *state));
        }
        v
    }

    fn channels(n: usize) -> Vec<ChannelName> {
        (0..n)
            .map(|i| ChannelName::new(&format!("chat:{i}")).unwrap())
            .collect()
    }

    #[test]
    fn a_placement_remembers_the_brokers_seen_but_those_that_drained_away() {
        use NodeState::{Active, Draining};
        let three = view(&[("b1", Active), ("b2", Active), ("b3", Active)]);
        let alone = view(&[("b1", Active)]);
        assert_eq!(Placement::new(&alone, "b1").brokers_seen(), 1);
        let first = Placement::new(&three, "b1");
        assert_eq!(first.brokers_seen(), 3);
        // Killed or cut off: still counted.
        let cut_off = Placement::new(&alone, "b1").after(&first);
        assert_eq!(cut_off.brokers_seen(), 3);
        let still = Placement::new(&alone, "b1").after(&cut_off);
        assert_eq!(still.brokers_seen(), 3);
        // b3 drains, then leaves: no longer counted.
        let draining = view(&[("b1", Active), ("b2", Active), ("b3", Draining)]);
        let draining = Placement::new(&draining, "b1").after(&first);
        assert_eq!(draining.brokers_seen(), 3);
        let two = view(&[("b1", Active), ("b2", Active)]);
        assert_eq!(
            Placement::new(&two, "b1").after(&draining).brokers_seen(),
            2
        );
    }

    #[test]
    fn a_channels_missing_holder_is_its_owner_among_the_brokers_seen_when_not_live() {
        use NodeState::Active;
        let three = view(&[("b1", Active), ("b2", Active), ("b3", Active)]);
        let all = Placement::new(&three, "b3");
        let two = Placement::new(&view(&[("b1", Active), ("b3", Active)]), "b3").after(&all);
        for channel in channels(200) {
            let ch = channel.as_str();
            assert_eq!(all.missing_holder(ch), None, "all live");
            let expected = (all.owner(ch) == Some("b2")).then(|| "b2".into());
            assert_eq!(two.missing_holder(ch), expected, "{ch}");
        }
    }

    #[test]
    fn a_channels_first_voters_come_from_every_broker_seen() {
        use NodeState::Active;
        let three = view(&[("b1", Active), ("b2", Active), ("b3", Active)]);
        let all = Placement::new(&three, "b2");
        let order = all.first_order("chat:1");
        assert_eq!(order, all.failover("chat:1"), "all live: the ring's order");
        // The first broker of that order cut off: the live ring skips it,
        // the order over the brokers seen does not.
        let first = order[0].as_str();
        let rest: Vec<(&str, NodeState)> = ["b1", "b2", "b3"]
            .into_iter()
            .filter(|b| *b != first)
            .map(|b| (b, Active))
            .collect();
        let me = order[1].as_str();
        let cut = Placement::new(&view(&rest), me).after(&Placement::new(&three, me));
        assert_eq!(cut.first_order("chat:1"), order);
        assert_eq!(cut.failover("chat:1"), order[1..].to_vec());
    }

    #[test]
    fn a_restarted_broker_counts_the_brokers_it_remembers() {
        use NodeState::Active;
        let alone = view(&[("b1", Active)]);
        let remembered: BTreeSet<String> = ["b1", "b2", "b3"].map(String::from).into();
        let restarted = Placement::new(&alone, "b1").remembering(&remembered);
        assert_eq!(restarted.brokers_seen(), 3);
        assert_eq!(restarted.seen(), &remembered);
        // And keeps counting them as views follow.
        assert_eq!(
            Placement::new(&alone, "b1")
                .after(&restarted)
                .brokers_seen(),
            3
        );
    }

    #[test]
    fn a_joining_owner_takes_state_from_the_previous_owner() {
        use NodeState::Active;
        let before = view(&[("b1", Active), ("b2", Active), ("b3", Active)]);
        let after = view(&[
            ("b1", Active),
            ("b2", Active),
            ("b3", Active),
            ("b4", Active),
        ]);
        let old = Placement::new(&before, "b1");
        let b4 = Placement::new(&after, "b4");
        let mut moved = 0;
        for c in channels(1000) {
            if b4.owns(c.as_str()) {
                moved += 1;
                let source = b4.source(c.as_str()).unwrap();
                assert_eq!(Some(source.name.as_str()), old.owner(c.as_str()));
                assert_eq!(source.addr, format!("{}:7000", source.name));
            }
        }
        assert!((200..300).contains(&moved), "{moved} of 1000 moved");
    }

    #[test]
    fn a_draining_owner_is_the_source_and_no_longer_the_owner() {
        use NodeState::{Active, Draining};
        let before = view(&[("b1", Active), ("b2", Active), ("b3", Active)]);
        let during = view(&[("b1", Active), ("b2", Draining), ("b3", Active)]);
        let old = Placement::new(&before, "b2");
        let b2 = Placement::new(&during, "b2");
        for c in channels(300) {
            let new_owner = b2.owner(c.as_str()).unwrap();
            assert_ne!(new_owner, "b2");
            if !old.owns(c.as_str()) {
                // Not b2's: its owner stays and has it already.
                assert_eq!(Some(new_owner), old.owner(c.as_str()));
                continue;
            }
            let taker = Placement::new(&during, new_owner);
            let source = taker.source(c.as_str()).unwrap().name;
            assert_eq!(Some(source.as_str()), old.owner(c.as_str()));
        }
        // b2 holds what it owned before and must hand all of it over.
        let held: Vec<ChannelName> = channels(300)
            .into_iter()
            .filter(|c| old.owns(c.as_str()))
            .collect();
        let misplaced = b2.misplaced(&held);
        assert_eq!(misplaced.values().map(Vec::len).sum::<usize>(), held.len());
        assert!(!misplaced.contains_key("b2"));
    }

    #[test]
    fn after_a_crash_nobody_alive_held_the_channel() {
        use NodeState::Active;
        let before = view(&[("b1", Active), ("b2", Active), ("b3", Active)]);
        let after = view(&[("b1", Active), ("b3", Active)]);
        for c in channels(300) {
            if Placement::new(&before, "b1").owner(c.as_str()) != Some("b2") {
                continue;
            }
            let survivor = Placement::new(&after, "b1");
            let owner = survivor.owner(c.as_str()).unwrap();
            let taker = Placement::new(&after, owner);
            // The source is the other survivor, which never held it: the
            // channel starts a new epoch there.
            let source = taker.source(c.as_str()).unwrap().name;
            assert_ne!(source, "b2");
            assert_ne!(source, owner);
        }
    }

    #[test]
    fn a_doubted_broker_checks_every_channel_with_whoever_would_have_taken_it() {
        use NodeState::Active;
        let all = view(&[("b1", Active), ("b2", Active), ("b3", Active)]);
        let before = Placement::new(&all, "b3");
        // Nobody appeared and nothing changed in b3's own view: nothing to
        // check.
        let same = Placement::new(&all, "b3");
        assert_eq!(same.recheck_since(&before), None);
        // b3 learns it was suspected or declared down: its view may never
        // have shown the others leaving, yet each of its channels may have
        // gone on at the broker that owns it on the ring without b3.
        let mut doubted = all.clone();
        doubted.doubted();
        let after = Placement::new(&doubted, "b3");
        let recheck = after.recheck_since(&before).unwrap();
        let without_b3 = Placement::new(&view(&[("b1", Active), ("b2", Active)]), "b1");
        for c in channels(100) {
            let check = after.verify_with(c.as_str(), &recheck).unwrap();
            assert_eq!(Some(check.as_str()), without_b3.owner(c.as_str()));
        }
        // Once handled, the same count asks for nothing more.
        let later = Placement::new(&doubted, "b3");
        assert_eq!(later.recheck_since(&after), None);
    }

    #[test]
    fn a_broker_that_reappears_is_asked_about_the_channels_it_could_have_taken() {
        use NodeState::Active;
        let alone = Placement::new(&view(&[("b1", Active), ("b3", Active)]), "b3");
        let back = Placement::new(
            &view(&[("b1", Active), ("b2", Active), ("b3", Active)]),
            "b3",
        );
        let recheck = back.recheck_since(&alone).unwrap();
        for c in channels(100) {
            let check = back.verify_with(c.as_str(), &recheck);
            let source = back.source(c.as_str()).map(|s| s.name);
            if source.as_ref().map(BrokerName::as_str) == Some("b2") {
                assert_eq!(check.as_deref(), Some("b2"));
            } else {
                assert_eq!(check, None);
            }
        }
    }

    #[test]
    fn alone_there_is_no_source() {
        let v = view(&[("b1", NodeState::Active)]);
        let p = Placement::new(&v, "b1");
        assert!(p.owns("chat:x"));
        assert_eq!(p.source("chat:x"), None);
        assert!(p.misplaced(&channels(10)).is_empty());
    }
}
