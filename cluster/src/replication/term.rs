//! A channel's term and the replica configuration decided for it.

use std::fmt;

use switchboard_core::BrokerName;

/// Raised by every change of a channel's leader or replica set; totally
/// ordered. Term 0 means "no configuration yet".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

impl Term {
    pub const ZERO: Term = Term(0);

    /// The term after this one.
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who leads, who follows and who witnesses a channel in one term.
///
/// The leader and the followers are the *data replicas* (they store the
/// log); the witness stores only the register and votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub term: Term,
    pub leader: BrokerName,
    pub followers: Vec<BrokerName>,
    pub witness: Option<BrokerName>,
    /// Brokers outside this configuration that may hold a register or a
    /// log of the channel from an earlier one (voters and members of the
    /// configurations before it, and the candidates that stood): retiring
    /// the channel must reach them too, or one of them could stand on
    /// what it holds once the others forgot the newer configurations
    /// (docs/replication.md, "Retiring an idle channel").
    pub holders: Vec<BrokerName>,
}

/// Configuration changes are decided by a majority of at most this many
/// voters, whatever the replication factor.
pub const MAX_VOTERS: usize = 3;

impl ReplicaConfig {
    /// The leader, then the followers, then the witness, truncated to
    /// [`MAX_VOTERS`]: the brokers that decide the next configuration.
    pub fn voters(&self) -> Vec<BrokerName> {
        std::iter::once(&self.leader)
            .chain(&self.followers)
            .chain(&self.witness)
            .take(MAX_VOTERS)
            .cloned()
            .collect()
    }

    /// How many of [`ReplicaConfig::voters`] make a majority.
    pub fn majority(&self) -> usize {
        self.voters().len() / 2 + 1
    }

    /// Whether the voters `live` says are up (with `me`, which is) fall
    /// short of a majority: no candidate can win a later term.
    pub fn majority_lost(&self, me: &BrokerName, live: impl Fn(&BrokerName) -> bool) -> bool {
        let up = self.voters().iter().filter(|v| *v == me || live(v)).count();
        up < self.majority()
    }

    pub fn is_voter(&self, broker: &BrokerName) -> bool {
        self.voters().contains(broker)
    }

    /// The leader and the followers: who stores the log.
    pub fn data_replicas(&self) -> impl Iterator<Item = &BrokerName> + '_ {
        std::iter::once(&self.leader).chain(&self.followers)
    }

    pub fn is_data_replica(&self, broker: &BrokerName) -> bool {
        self.data_replicas().any(|b| b == broker)
    }

    /// Every broker that may hold anything of the channel: the members,
    /// then the holders.
    pub fn everyone(&self) -> impl Iterator<Item = &BrokerName> + '_ {
        self.members().chain(&self.holders)
    }

    /// Every broker that must learn this configuration: data replicas and
    /// the witness.
    pub fn members(&self) -> impl Iterator<Item = &BrokerName> + '_ {
        self.data_replicas().chain(&self.witness)
    }

    /// A data replica of this configuration other than `me` that `live`
    /// says is up: it holds every publication acknowledged in this term,
    /// so a broker that may not stand on the term must not serve the
    /// channel from an older copy, nor start it anew, while it may be
    /// reached. (Gossip flaps at a partition's heal: the cut-off broker's
    /// stale declarations take a healthy leader out of every view for a
    /// moment, and the ring hands its channels to the healed broker.)
    pub fn data_elsewhere(
        &self,
        me: &BrokerName,
        live: impl Fn(&BrokerName) -> bool,
    ) -> Option<&BrokerName> {
        self.data_replicas().find(|b| *b != me && live(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(followers: &[&str], witness: Option<&str>) -> ReplicaConfig {
        ReplicaConfig {
            term: Term(4),
            leader: "b1".into(),
            followers: followers.iter().map(|&f| f.into()).collect(),
            witness: witness.map(Into::into),
            holders: vec![],
        }
    }

    #[test]
    fn terms_order_and_display() {
        assert!(Term(2) > Term(1));
        assert_eq!(Term(1).next(), Term(2));
        assert_eq!(Term::ZERO, Term::default());
        assert_eq!(Term(7).to_string(), "7");
    }

    #[test]
    fn two_data_replicas_and_a_witness_vote() {
        let c = config(&["b2"], Some("b3"));
        assert_eq!(
            c.voters(),
            vec!["b1".into(), "b2".into(), "b3".into()] as Vec<BrokerName>
        );
        assert_eq!(c.majority(), 2);
        assert!(c.is_data_replica(&"b2".into()));
        assert!(!c.is_data_replica(&"b3".into()));
        assert!(c.is_voter(&"b3".into()));
    }

    #[test]
    fn a_majority_is_lost_with_two_of_three_voters() {
        let c = config(&["b2"], Some("b3"));
        let up = |names: &'static [&'static str]| move |b: &BrokerName| names.contains(&b.as_str());
        assert!(!c.majority_lost(&"b3".into(), up(&["b1"])));
        assert!(c.majority_lost(&"b3".into(), up(&[])));
        assert!(c.majority_lost(&"b4".into(), up(&["b3"])));
        assert!(!c.majority_lost(&"b2".into(), up(&["b3"])));
    }

    #[test]
    fn data_elsewhere_is_a_live_data_replica_of_another_leader() {
        let c = config(&["b2"], Some("b3"));
        let me: BrokerName = "b3".into();
        // The leader is down; its follower is live: the data is there.
        assert_eq!(
            c.data_elsewhere(&me, |b| b.as_str() == "b2"),
            Some(&"b2".into())
        );
        // Only the witness (this broker) is left: no data anywhere.
        assert_eq!(c.data_elsewhere(&me, |_| false), None);
        // A follower's own copy is not elsewhere.
        assert_eq!(c.data_elsewhere(&"b2".into(), |b| b.as_str() == "b2"), None);
        // The leader asks (one that lost its log): its follower has it.
        assert_eq!(c.data_elsewhere(&"b1".into(), |_| true), Some(&"b2".into()));
    }

    #[test]
    fn voters_are_truncated_to_three() {
        let c = config(&["b2", "b3"], Some("b4"));
        assert_eq!(c.voters().len(), 3);
        assert!(!c.is_voter(&"b4".into()));
        assert_eq!(c.majority(), 2);
        assert_eq!(c.members().count(), 4);
    }

    #[test]
    fn a_lone_leader_is_its_own_majority() {
        let c = config(&[], None);
        assert_eq!(c.voters().len(), 1);
        assert_eq!(c.majority(), 1);
        let pair = config(&["b2"], None);
        assert_eq!(pair.majority(), 2);
    }
}
