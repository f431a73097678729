//! What a broker does with a replicated channel it is asked for when, from
//! where it stands, the channel cannot be replicated: no majority of the
//! voters of the newest configuration it knows is reachable, or fewer
//! brokers than the replica set needs (`broker.lost_majority`,
//! docs/replication.md "A lost majority").
//!
//! From inside, a broker cut off by a partition and a broker whose peers
//! died see the same thing. Refusing (the default; Kafka's
//! `unclean.leader.election.enable = false`) never acknowledges a
//! publication that is stored on fewer than R brokers chosen by a
//! majority, and costs availability until the majority is back. Serving
//! keeps a channel available when its replicas really died, and costs
//! what is acknowledged on the cut-off side of a partition.

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use switchboard_core::BrokerName;

use super::{Plan, ReplicaConfig, Term};

/// `broker.lost_majority`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LostMajority {
    /// Refuse every request for the channel (the gateway retries, then
    /// answers code 100) until a majority and R brokers are reachable.
    #[default]
    Refuse,
    /// Serve the channel unreplicated: from a complete replica held here
    /// in the same epoch, else in a new epoch, announced.
    Serve,
}

impl FromStr for LostMajority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "serve" => Ok(Self::Serve),
            "refuse" => Ok(Self::Refuse),
            other => Err(format!(
                "lost_majority is {other:?}: it must be \"serve\" or \"refuse\""
            )),
        }
    }
}

impl fmt::Display for LostMajority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Serve => "serve",
            Self::Refuse => "refuse",
        })
    }
}

/// Why a channel cannot be replicated from here now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Shortfall {
    /// Too few of the voters of the newest configuration known here are
    /// reachable to decide the next one (term 0: a channel unknown here,
    /// whose first voters the order over every broker seen names).
    #[error("no majority of the voters of term {0} is reachable")]
    NoMajority(Term),
    /// Fewer brokers are reachable than the replica set needs: a
    /// configuration formed now would store the channel on fewer than R.
    #[error("{reachable} of the {wanted} brokers the replica set needs are reachable")]
    TooFewBrokers { reachable: usize, wanted: usize },
    /// No configuration of the channel is known here, and no majority of
    /// the brokers seen is reachable: its voters may be on the other side
    /// of a partition, going on without this one.
    #[error("the channel is unknown here and {reachable} of the {seen} brokers seen are reachable")]
    NoClusterMajority { reachable: usize, seen: usize },
}

/// Why `me` cannot replicate a channel now, if it cannot. `newest` is the
/// newest configuration it knows for the channel (none before the first
/// term); `plan` its failover order as its ring gives it, with the brokers
/// it believes down (gossip, ended streams, a lost leader) in `plan.down`.
/// A voter counts as reachable if `live` says so and it is not in
/// `plan.down`; `me` always does. `seen` is how many brokers `me` has seen
/// since it started (less those that drained away): R brokers are wanted
/// only of a broker that has seen as many (a cluster of one is not a
/// broker cut off), and a channel it knows no configuration of (a first
/// term here: new, or its voters are elsewhere) only with a majority of
/// them reachable, and a majority of its first voters (`plan.first`'s).
pub fn shortfall(
    newest: Option<&ReplicaConfig>,
    (me, seen): (&BrokerName, usize),
    live: impl Fn(&BrokerName) -> bool,
    plan: &Plan,
) -> Option<Shortfall> {
    let reachable = |b: &BrokerName| b == me || (live(b) && !plan.down.contains(b));
    let known = newest.filter(|c| c.term > Term::ZERO);
    if let Some(config) = known
        && config.majority_lost(me, reachable)
    {
        return Some(Shortfall::NoMajority(config.term));
    }
    let wanted = plan.replicas.clamp(1, 3).min(seen.max(1));
    let brokers: BTreeSet<&BrokerName> = plan
        .failover
        .iter()
        .chain(std::iter::once(me))
        .filter(|b| reachable(b))
        .collect();
    if brokers.len() < wanted {
        return Some(Shortfall::TooFewBrokers {
            reachable: brokers.len(),
            wanted,
        });
    }
    if known.is_some() {
        return None;
    }
    // A channel unknown here is decided at its first voters (term 0's):
    // those the order over every broker seen names, reachable or not.
    if let Some(first) = plan.initial_config()
        && first.majority_lost(me, reachable)
    {
        return Some(Shortfall::NoMajority(Term::ZERO));
    }
    (brokers.len() * 2 <= seen).then_some(Shortfall::NoClusterMajority {
        reachable: brokers.len(),
        seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<BrokerName> {
        list.iter().map(|n| BrokerName::from(*n)).collect()
    }

    fn plan(failover: &[&str], down: &[&str]) -> Plan {
        Plan {
            failover: names(failover),
            first: vec![],
            down: names(down).into_iter().collect(),
            replicas: 2,
        }
    }

    fn config(term: u64) -> ReplicaConfig {
        ReplicaConfig {
            term: Term(term),
            leader: "a".into(),
            followers: names(&["b"]),
            witness: Some("c".into()),
            holders: vec![],
        }
    }

    const ALL: fn(&BrokerName) -> bool = |_| true;

    #[test]
    fn a_broker_left_alone_cannot_replicate_a_channel_it_led() {
        // A partitioned leader: its ring holds only itself.
        let why = shortfall(
            Some(&config(4)),
            (&"a".into(), 3),
            |b| b == "a",
            &plan(&["a"], &[]),
        );
        assert_eq!(why, Some(Shortfall::NoMajority(Term(4))));
    }

    #[test]
    fn a_witness_whose_data_replicas_died_cannot_either() {
        // Both replicas of R = 2 killed: the witness sees what a cut-off
        // broker sees.
        let c = "c".into();
        let why = shortfall(Some(&config(2)), (&c, 3), |b| b == "c", &plan(&["c"], &[]));
        assert_eq!(why, Some(Shortfall::NoMajority(Term(2))));
    }

    #[test]
    fn the_majority_side_of_a_partition_can() {
        let b = "b".into();
        let live = |n: &BrokerName| n != "a";
        assert_eq!(
            shortfall(Some(&config(4)), (&b, 3), live, &plan(&["b", "c"], &[])),
            None
        );
    }

    #[test]
    fn a_lost_leader_counts_out_before_gossip_does() {
        // b lost its stream to a and c's stream ended too: two of three
        // voters are out although gossip still lists them.
        let b = "b".into();
        let why = shortfall(
            Some(&config(3)),
            (&b, 3),
            ALL,
            &plan(&["a", "b", "c"], &["a", "c"]),
        );
        assert_eq!(why, Some(Shortfall::NoMajority(Term(3))));
        let one_out = shortfall(
            Some(&config(3)),
            (&b, 3),
            ALL,
            &plan(&["a", "b", "c"], &["a"]),
        );
        assert_eq!(one_out, None);
    }

    #[test]
    fn a_first_term_needs_r_reachable_brokers() {
        let a = "a".into();
        assert_eq!(
            shortfall(None, (&a, 3), ALL, &plan(&["a"], &[])),
            Some(Shortfall::TooFewBrokers {
                reachable: 1,
                wanted: 2
            })
        );
        assert_eq!(shortfall(None, (&a, 3), ALL, &plan(&["a", "b"], &[])), None);
        assert_eq!(
            shortfall(None, (&a, 3), ALL, &plan(&["a", "b"], &["b"])),
            Some(Shortfall::TooFewBrokers {
                reachable: 1,
                wanted: 2
            })
        );
    }

    #[test]
    fn a_refill_with_one_broker_left_is_short() {
        // 3 brokers, a leads with b; b and c die: a majority of a's term
        // is gone, and so is any second copy.
        let a = "a".into();
        let why = shortfall(
            Some(&config(5)),
            (&a, 3),
            |n| n == "a",
            &plan(&["a"], &["b"]),
        );
        assert_eq!(why, Some(Shortfall::NoMajority(Term(5))));
        // One of two gone: a refill with c is possible.
        let live = |n: &BrokerName| n != "b";
        assert_eq!(
            shortfall(Some(&config(5)), (&a, 3), live, &plan(&["a", "c"], &["b"])),
            None
        );
    }

    #[test]
    fn a_broker_that_never_saw_another_is_a_cluster_of_one() {
        let a = "a".into();
        assert_eq!(shortfall(None, (&a, 1), ALL, &plan(&["a"], &[])), None);
        // Once it saw two, one alone is short.
        assert_eq!(
            shortfall(None, (&a, 2), ALL, &plan(&["a"], &[])),
            Some(Shortfall::TooFewBrokers {
                reachable: 1,
                wanted: 2
            })
        );
    }

    #[test]
    fn a_channel_unknown_here_needs_a_majority_of_the_brokers_seen() {
        // Five brokers, cut 2 | 3: the two may not start a channel whose
        // voters may be among the three; the three may.
        let d = "d".into();
        let two = plan(&["d", "e"], &[]);
        assert_eq!(
            shortfall(None, (&d, 5), ALL, &two),
            Some(Shortfall::NoClusterMajority {
                reachable: 2,
                seen: 5
            })
        );
        let three = plan(&["a", "b", "c"], &[]);
        assert_eq!(shortfall(None, (&"a".into(), 5), ALL, &three), None);
        // A channel whose configuration is known here is the voters' to
        // decide.
        let known = shortfall(
            Some(&config(2)),
            (&"a".into(), 5),
            ALL,
            &plan(&["a", "b"], &[]),
        );
        assert_eq!(known, None);
    }

    #[test]
    fn a_channel_unknown_here_needs_a_majority_of_its_first_voters() {
        // Seven brokers; a channel's first voters (the order over every
        // broker seen) are a, b and c, all cut off. The four others are a
        // majority of the brokers seen, but the channel may be going on
        // at a, b and c: d, its owner on the ring of the four, refuses it.
        let d = "d".into();
        let mut cut = plan(&["d", "e", "f", "g"], &[]);
        cut.first = names(&["a", "b", "c", "d", "e", "f", "g"]);
        let live = |n: &BrokerName| !["a", "b", "c"].contains(&n.as_str());
        assert_eq!(
            shortfall(None, (&d, 7), live, &cut),
            Some(Shortfall::NoMajority(Term::ZERO))
        );
        // With two of them back, two of the three decide.
        let live = |n: &BrokerName| n.as_str() != "a";
        assert_eq!(shortfall(None, (&d, 7), live, &cut), None);
    }

    #[test]
    fn the_setting_reads_as_written() {
        assert_eq!("refuse".parse(), Ok(LostMajority::Refuse));
        assert_eq!("serve".parse(), Ok(LostMajority::Serve));
        assert!("strict".parse::<LostMajority>().is_err());
        assert_eq!(LostMajority::default(), LostMajority::Refuse);
        assert_eq!(LostMajority::Refuse.to_string(), "refuse");
    }
}
