//! One attempt to change a channel's configuration (takeover, refill,
//! hand-over): the candidate prepares a new term at the voters of the
//! configuration it knows, chooses the next configuration, and has it
//! accepted by a majority of those same voters before it leads.
//!
//! The accept round is what makes a configuration *chosen*: any later
//! candidate that prepares a majority of the old voters meets at least one
//! that accepted it, sees it is out of date, and must start again from it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use switchboard_core::BrokerName;

use super::{
    register::{PrepareReply, Refusal},
    replica_log::ReplicaLog,
    term::{ReplicaConfig, Term},
};

/// Whom the next configuration may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The channel's failover order (the ring's, [`crate::ring::Ring::failover`]).
    pub failover: Vec<BrokerName>,
    /// The channel's failover order over every broker seen, reachable or
    /// not (empty: `failover`'s): the first term's voters come from it, so
    /// that brokers whose rings differ (both sides of a partition, a
    /// broker with a peer down) prepare the first term at the same voters,
    /// and at most one side can win it (docs/replication.md, "The first
    /// term").
    pub first: Vec<BrokerName>,
    /// Brokers the candidate believes down: skipped.
    pub down: BTreeSet<BrokerName>,
    /// Data replicas wanted, R (clamped to 1..=3).
    pub replicas: usize,
}

impl Plan {
    /// The configuration a channel is taken to have before its first term
    /// (term 0): the first broker of the order over every broker seen
    /// ([`Plan::first`]) leads, the next R - 1 follow and, with R = 2, the
    /// one after witnesses. The first candidacy (for term 1) stands on it,
    /// so term 1 is decided by a majority of the voters the ring of every
    /// broker seen names, like every later term, whichever of them are
    /// reachable.
    pub fn initial_config(&self) -> Option<ReplicaConfig> {
        let replicas = self.replicas.clamp(1, 3);
        let order = if self.first.is_empty() {
            &self.failover
        } else {
            &self.first
        };
        let mut seen = BTreeSet::new();
        let mut order = order.iter().filter(|b| seen.insert((*b).clone()));
        let leader = order.next()?.clone();
        let followers: Vec<BrokerName> = order.by_ref().take(replicas - 1).cloned().collect();
        let witness = if replicas == 2 {
            order.next().cloned()
        } else {
            None
        };
        Some(ReplicaConfig {
            term: Term::ZERO,
            leader,
            followers,
            witness,
            holders: Vec::new(),
        })
    }
}

/// Why a broker may not stand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error("not a data replica of term {0}")]
    NotADataReplica(Term),
    #[error("does not hold every entry that may be committed in term {0}")]
    Incomplete(Term),
    #[error("term {proposed} is not after {current}")]
    TermNotNewer { proposed: Term, current: Term },
    /// The channel held here (from a hand-over) is further on than this
    /// broker's replica log, or of another epoch: leading would number new
    /// publications at offsets subscribers already had.
    #[error("the replica log (ending at {log_end}) is behind the channel held here (at {held})")]
    BehindHeldState { held: u64, log_end: u64 },
    /// A majority of the voters of the newest configuration known here is
    /// down, its leader with them: no candidate can win.
    #[error("no majority of the voters of term {0} is left")]
    NoMajorityLeft(Term),
}

/// Where a candidacy stands after a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// A majority prepared: send `Commit{config}` to the voters of the base
    /// configuration (the candidate's own register included).
    Propose(ReplicaConfig),
    /// A majority accepted: `config` is chosen. The driver calls
    /// `ReplicaLog::lead`, then applies `config` to its own register
    /// (`Register::on_commit`) and leads only if that accepts it; if not (it
    /// promised a later term meanwhile) it calls `Register::learn` and may
    /// stand again on top of it. `catching_up` are the followers that were
    /// not data replicas before: nothing new commits until they hold the
    /// leader's log.
    Won {
        config: ReplicaConfig,
        catching_up: Vec<BrokerName>,
    },
    /// Someone is ahead: `newer_term` was promised or decided; `config` is
    /// the newest configuration a voter reported, to start again from.
    Lost {
        newer_term: Term,
        config: Option<ReplicaConfig>,
    },
}

#[derive(Debug, Clone)]
enum Phase {
    Preparing,
    Proposing(ReplicaConfig),
    Finished(Outcome),
}

/// One candidate's attempt at one term.
#[derive(Debug, Clone)]
pub struct Candidacy {
    me: BrokerName,
    base: ReplicaConfig,
    term: Term,
    plan: Plan,
    /// The base's voters, and [`Self::also`]'s.
    voters: Vec<BrokerName>,
    /// Standing on a configuration that names this broker leader and that
    /// it never led: the voters it was proposed to, a majority of whom must
    /// answer too (it may never have been chosen).
    also: Vec<BrokerName>,
    promised: BTreeMap<BrokerName, Option<u64>>,
    accepted: BTreeSet<BrokerName>,
    /// Voters that refused the proposal, and the promise each refused it
    /// with.
    refused: BTreeMap<BrokerName, Term>,
    lease_blocked_until: Option<Instant>,
    phase: Phase,
}

impl Candidacy {
    /// `me` stands for `term` on top of `base`, the newest configuration it
    /// knows; `log` is its log of the channel. Only a data replica of `base`
    /// whose log holds everything that may be committed may stand, or a
    /// broker `base`'s leader handed its log to as it stepped down
    /// ([`ReplicaLog::handed`]): nothing was committed in `base`'s term
    /// after that log's end, so it holds all that may have been. On the
    /// first term's base (term 0) anyone may: nothing was committed before
    /// it, and the ring's owner need not be among the first brokers of the
    /// order over every broker seen when some of them are down.
    pub fn new<P: Clone>(
        me: BrokerName,
        base: ReplicaConfig,
        log: &ReplicaLog<P>,
        term: Term,
        plan: Plan,
    ) -> Result<Self, Ineligible> {
        let first = base.term == Term::ZERO;
        if !first && !base.is_data_replica(&me) && !log.is_handed_for(base.term) {
            return Err(Ineligible::NotADataReplica(base.term));
        }
        // The leader a configuration names, if it never came to lead it
        // (its election ended, by a deadline or a later promise, after a
        // majority accepted it), holds the reference log all the same: only
        // its own candidacy could name it, on a log complete for the term
        // before, and nothing was appended in a term nobody led. Without
        // this, no broker could ever stand on that configuration again.
        // Not on a log made after this broker forgot terms up to `base`'s:
        // that log is empty because the channel retired here, not because
        // nothing was appended.
        let never_led = base.leader == me
            && log.term() < base.term
            && base.term > log.made_above()
            && log.is_complete_for(log.term());
        if !log.is_complete_for(base.term) && !never_led {
            return Err(Ineligible::Incomplete(base.term));
        }
        // Its own register accepted that configuration first, as one of the
        // voters it proposed it to: it may not have been chosen, and then
        // its voters alone (fewer, or others, when the candidate counted
        // brokers out) could decide a term that the proposal's voters
        // decide too. A majority of both keeps one decision per term.
        // Model seed 45,648 of 60,000 found it.
        let also = if never_led {
            match log.proposed_to(base.term) {
                Some(voters) => voters.to_vec(),
                None => return Err(Ineligible::Incomplete(base.term)),
            }
        } else {
            Vec::new()
        };
        if term <= base.term {
            return Err(Ineligible::TermNotNewer {
                proposed: term,
                current: base.term,
            });
        }
        let mut voters = base.voters();
        voters.extend(also.iter().filter(|v| !base.is_voter(v)).cloned());
        Ok(Self {
            me,
            voters,
            also,
            base,
            term,
            plan,
            promised: BTreeMap::new(),
            accepted: BTreeSet::new(),
            refused: BTreeMap::new(),
            lease_blocked_until: None,
            phase: Phase::Preparing,
        })
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn base(&self) -> &ReplicaConfig {
        &self.base
    }

    /// Where to send `Prepare{term}` and, later, `Commit{config}`.
    pub fn voters(&self) -> &[BrokerName] {
        &self.voters
    }

    /// Log ends the data replicas among the voters reported.
    pub fn log_ends(&self) -> impl Iterator<Item = (&BrokerName, u64)> + '_ {
        self.promised
            .iter()
            .filter_map(|(b, end)| end.map(|e| (b, e)))
    }

    /// The latest end of a lease that made a voter refuse: trying again
    /// before then is pointless.
    pub fn lease_blocked_until(&self) -> Option<Instant> {
        self.lease_blocked_until
    }

    /// A voter's answer to `Prepare`. After the attempt is won or lost, the
    /// final outcome is repeated.
    pub fn on_prepare_reply(&mut self, from: &BrokerName, reply: &PrepareReply) -> Outcome {
        if let Phase::Finished(outcome) = &self.phase {
            return outcome.clone();
        }
        if !self.voters.contains(from) {
            return Outcome::Pending;
        }
        let (config, refused) = match reply {
            PrepareReply::Promised { config, .. } => (config, None),
            PrepareReply::Refused {
                promised,
                config,
                reason,
            } => (config, Some((*promised, reason))),
        };
        if let Some(newer) = config.as_ref().filter(|c| c.term > self.base.term) {
            return self.finish(Outcome::Lost {
                newer_term: newer.term,
                config: Some(newer.clone()),
            });
        }
        match (refused, reply) {
            (Some((promised, _)), _) if promised >= self.term => self.finish(Outcome::Lost {
                newer_term: promised,
                config: config.clone(),
            }),
            (Some((_, Refusal::LeaseHeld { until })), _) => {
                let later = self.lease_blocked_until.map_or(*until, |u| u.max(*until));
                self.lease_blocked_until = Some(later);
                Outcome::Pending
            }
            (Some(_), _) => Outcome::Pending,
            (None, PrepareReply::Promised { log_end, .. }) => {
                self.promised.insert(from.clone(), *log_end);
                self.maybe_propose()
            }
            (None, PrepareReply::Refused { .. }) => Outcome::Pending,
        }
    }

    fn maybe_propose(&mut self) -> Outcome {
        let quorum = self.quorum(|v| self.promised.contains_key(v));
        if !matches!(self.phase, Phase::Preparing) || !quorum {
            return Outcome::Pending;
        }
        let config = self.choose();
        self.phase = Phase::Proposing(config.clone());
        Outcome::Propose(config)
    }

    /// A voter's answer to `Commit{config}`: accepted, or refused because it
    /// promised `promised`.
    pub fn on_commit_reply(
        &mut self,
        from: &BrokerName,
        accepted: bool,
        promised: Term,
    ) -> Outcome {
        let config = match &self.phase {
            Phase::Finished(outcome) => return outcome.clone(),
            Phase::Preparing => return Outcome::Pending,
            Phase::Proposing(config) => config.clone(),
        };
        if !self.voters.contains(from) {
            return Outcome::Pending;
        }
        if !accepted {
            if promised < self.term {
                return Outcome::Pending;
            }
            // One refusal does not lose it: the others may still make a
            // majority, and then the configuration is chosen whatever this
            // candidate does. Giving up on it left a chosen configuration
            // that nobody led: its leader refused the channel as held
            // elsewhere, and no leader ever retired it (new channels whose
            // third voter's floor rose past their first term meanwhile,
            // churn runs of session 20). Lost once no majority can accept
            // any more.
            self.refused.insert(from.clone(), promised);
            let refused = &self.refused;
            let accepted = &self.accepted;
            if self.quorum(|v| accepted.contains(v) || !refused.contains_key(v)) {
                return Outcome::Pending;
            }
            let newer_term = refused.values().copied().max().unwrap_or(promised);
            return self.finish(Outcome::Lost {
                newer_term,
                config: None,
            });
        }
        self.accepted.insert(from.clone());
        if !self.quorum(|v| self.accepted.contains(v)) {
            return Outcome::Pending;
        }
        let catching_up = config
            .followers
            .iter()
            .filter(|f| !self.base.is_data_replica(f))
            .cloned()
            .collect();
        self.finish(Outcome::Won {
            config,
            catching_up,
        })
    }

    /// Whether the voters `answered` says did are a majority of the base's
    /// voters, and of [`Self::also`]'s if any.
    fn quorum(&self, answered: impl Fn(&BrokerName) -> bool) -> bool {
        let base = self.base.voters();
        let of_base = base.iter().filter(|v| answered(v)).count();
        let of_also = self.also.iter().filter(|v| answered(v)).count();
        of_base >= self.base.majority() && (self.also.is_empty() || of_also > self.also.len() / 2)
    }

    fn finish(&mut self, outcome: Outcome) -> Outcome {
        self.phase = Phase::Finished(outcome.clone());
        outcome
    }

    /// Itself as leader; followers, then (R = 2) a witness, from the
    /// failover order, skipping brokers believed down.
    fn choose(&self) -> ReplicaConfig {
        let replicas = self.plan.replicas.clamp(1, 3);
        let mut seen = BTreeSet::new();
        let mut live = self
            .plan
            .failover
            .iter()
            .filter(|b| **b != self.me && !self.plan.down.contains(*b))
            .filter(|b| seen.insert((*b).clone()))
            .cloned();
        let followers: Vec<BrokerName> = live.by_ref().take(replicas - 1).collect();
        let witness = if replicas == 2 { live.next() } else { None };
        let mut config = ReplicaConfig {
            term: self.term,
            leader: self.me.clone(),
            followers,
            witness,
            holders: Vec::new(),
        };
        // Everyone who may hold something of the channel and is not in the
        // new configuration: the base's members (its voters got prepares
        // and commits), the brokers it already named, and this broker.
        let inside: BTreeSet<BrokerName> = config.members().cloned().collect();
        let outside: BTreeSet<BrokerName> = self
            .base
            .everyone()
            .chain(std::iter::once(&self.me))
            .filter(|b| !inside.contains(*b))
            .cloned()
            .collect();
        config.holders = outside.into_iter().collect();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::register::Register;
    use std::time::Duration;

    const LEASE: Duration = Duration::from_millis(800);

    fn b(n: &str) -> BrokerName {
        n.into()
    }

    fn base() -> ReplicaConfig {
        ReplicaConfig {
            term: Term(4),
            leader: b("b1"),
            followers: vec![b("b2")],
            witness: Some(b("b3")),
            holders: vec![],
        }
    }

    #[test]
    fn the_first_term_stands_on_the_failover_orders_configuration() {
        let two = plan(2, &[]).initial_config().unwrap();
        assert_eq!(two.term, Term::ZERO);
        assert_eq!(
            (two.leader.as_str(), two.followers.clone()),
            ("b1", vec![b("b2")])
        );
        assert_eq!(two.witness, Some(b("b3")));
        let three = plan(3, &[]).initial_config().unwrap();
        assert_eq!((three.followers.len(), three.witness), (2, None));
        let one = plan(1, &[]).initial_config().unwrap();
        assert_eq!((one.followers.len(), one.witness), (0, None));
        let empty = Plan {
            failover: vec![],
            first: vec![],
            down: Default::default(),
            replicas: 2,
        };
        assert_eq!(empty.initial_config(), None);
    }

    fn plan(replicas: usize, down: &[&str]) -> Plan {
        Plan {
            failover: ["b1", "b2", "b3", "b4", "b5"].map(b).to_vec(),
            first: vec![],
            down: down.iter().map(|&d| b(d)).collect(),
            replicas,
        }
    }

    fn complete_log(term: u64) -> ReplicaLog<u8> {
        let mut log = ReplicaLog::new();
        log.adopt(Term(term), 0);
        log
    }

    fn promise(config: Option<ReplicaConfig>) -> PrepareReply {
        PrepareReply::Promised {
            log_end: Some(7),
            config,
        }
    }

    fn candidate(replicas: usize, down: &[&str]) -> Candidacy {
        Candidacy::new(
            b("b2"),
            base(),
            &complete_log(4),
            Term(5),
            plan(replicas, down),
        )
        .unwrap()
    }

    #[test]
    fn only_a_complete_data_replica_of_the_current_term_stands() {
        let p = plan(2, &[]);
        let log = complete_log(4);
        assert_eq!(
            Candidacy::new(b("b3"), base(), &log, Term(5), p.clone()).unwrap_err(),
            Ineligible::NotADataReplica(Term(4))
        );
        assert_eq!(
            Candidacy::new(b("b2"), base(), &complete_log(3), Term(5), p.clone()).unwrap_err(),
            Ineligible::Incomplete(Term(4))
        );
        assert_eq!(
            Candidacy::new(
                b("b2"),
                base(),
                &ReplicaLog::<u8>::lost(),
                Term(5),
                p.clone()
            )
            .unwrap_err(),
            Ineligible::Incomplete(Term(4))
        );
        assert!(matches!(
            Candidacy::new(b("b2"), base(), &log, Term(4), p),
            Err(Ineligible::TermNotNewer { .. })
        ));
    }

    /// b1, leader of term 4, stepped down at its committed offset and
    /// handed its log to b4 (b4 joined, and the ring now gives it the
    /// channel): b4 is none of term 4's data replicas but stands on it,
    /// and names itself leader with the old leader among its followers. A
    /// handed log of an older term, or one that followed since, does not.
    #[test]
    fn a_broker_handed_the_leaders_log_stands_on_its_term() {
        let handed = ReplicaLog::handed(Term(4), 1, [1u8, 2, 3]);
        let failover = ["b4", "b1", "b2", "b3"].map(b).to_vec();
        let p = Plan {
            failover,
            first: vec![],
            down: Default::default(),
            replicas: 2,
        };
        let mut c = Candidacy::new(b("b4"), base(), &handed, Term(5), p.clone()).unwrap();
        assert_eq!(c.voters(), base().voters());
        assert_eq!(
            c.on_prepare_reply(&b("b1"), &promise(Some(base()))),
            Outcome::Pending
        );
        let Outcome::Propose(config) = c.on_prepare_reply(&b("b3"), &promise(Some(base()))) else {
            panic!("a majority of term 4's voters promised");
        };
        assert_eq!(
            (
                config.leader.as_str(),
                config.followers.clone(),
                config.witness.clone()
            ),
            ("b4", vec![b("b1")], Some(b("b2")))
        );
        let old = ReplicaLog::handed(Term(3), 1, [1u8]);
        assert_eq!(
            Candidacy::new(b("b4"), base(), &old, Term(5), p.clone()).unwrap_err(),
            Ineligible::NotADataReplica(Term(4))
        );
        let mut followed = handed;
        followed.adopt(Term(5), 3);
        assert_eq!(
            Candidacy::new(b("b4"), base(), &followed, Term(5), p).unwrap_err(),
            Ineligible::NotADataReplica(Term(4))
        );
    }

    /// b1's candidacy for term 4 was accepted by a majority, but b1 never
    /// came to lead it (its election ran out first): its log, still of
    /// term 3, is the reference, and it may stand on term 4. Nobody else
    /// may: no follower ever adopted term 4.
    #[test]
    fn the_leader_a_configuration_names_stands_on_it_though_it_never_led_it() {
        let p = plan(2, &[]);
        let mut led_term_3 = ReplicaLog::<u8>::new();
        led_term_3.lead(Term(3));
        led_term_3.push(1);
        // Only a configuration it proposed itself, to voters it remembers.
        assert_eq!(
            Candidacy::new(b("b1"), base(), &led_term_3, Term(5), p.clone()).unwrap_err(),
            Ineligible::Incomplete(Term(4))
        );
        let proposed = [b("b1"), b("b2"), b("b3")];
        led_term_3.proposed(Term(4), proposed.to_vec());
        assert!(Candidacy::new(b("b1"), base(), &led_term_3, Term(5), p.clone()).is_ok());
        assert_eq!(
            Candidacy::new(b("b2"), base(), &complete_log(3), Term(5), p.clone()).unwrap_err(),
            Ineligible::Incomplete(Term(4))
        );
        assert_eq!(
            Candidacy::new(
                b("b1"),
                base(),
                &ReplicaLog::<u8>::lost(),
                Term(5),
                p.clone()
            )
            .unwrap_err(),
            Ineligible::Incomplete(Term(4)),
            "not on a log it lost"
        );
        // Nor on a log made after it forgot the channel in term 4 or later:
        // base is of an incarnation it retired, whose log it dropped.
        let mut forgot = ReplicaLog::<u8>::above(Term(4));
        forgot.proposed(Term(4), proposed.to_vec());
        assert_eq!(
            Candidacy::new(b("b1"), base(), &forgot, Term(5), p.clone()).unwrap_err(),
            Ineligible::Incomplete(Term(4)),
        );
        let mut below = ReplicaLog::<u8>::above(Term(3));
        below.proposed(Term(4), proposed.to_vec());
        assert!(Candidacy::new(b("b1"), base(), &below, Term(5), p).is_ok());
    }

    /// A configuration naming b1 alone (it counted the others out), that
    /// its own register accepted first and that may never have been
    /// chosen: b1 stands on it only with a majority of the voters it was
    /// proposed to as well, so that a term those voters decided meanwhile
    /// is not decided twice.
    #[test]
    fn the_named_leader_of_an_unled_configuration_needs_its_proposals_voters_too() {
        let alone = ReplicaConfig {
            term: Term(4),
            leader: b("b1"),
            followers: vec![],
            witness: None,
            holders: vec![b("b2"), b("b3")],
        };
        let mut log = ReplicaLog::<u8>::new();
        log.proposed(Term(4), vec![b("b1"), b("b2"), b("b3")]);
        let mut c = Candidacy::new(b("b1"), alone.clone(), &log, Term(5), plan(2, &[])).unwrap();
        assert_eq!(c.voters(), &[b("b1"), b("b2"), b("b3")]);
        let promised = || PrepareReply::Promised {
            log_end: None,
            config: None,
        };
        // Its own promise is a majority of the configuration's one voter,
        // not of the proposal's three.
        assert_eq!(c.on_prepare_reply(&b("b1"), &promised()), Outcome::Pending);
        let Outcome::Propose(config) = c.on_prepare_reply(&b("b3"), &promised()) else {
            panic!("a majority of both prepared");
        };
        assert_eq!(c.on_commit_reply(&b("b1"), true, Term(5)), Outcome::Pending);
        assert!(matches!(
            c.on_commit_reply(&b("b2"), true, Term(5)),
            Outcome::Won { config: won, .. } if won == config
        ));
        // A proposal voter that accepted a later configuration meanwhile
        // ends it.
        let mut c = Candidacy::new(b("b1"), alone, &log, Term(6), plan(2, &[])).unwrap();
        let later = ReplicaConfig {
            term: Term(5),
            leader: b("b2"),
            followers: vec![b("b3")],
            witness: Some(b("b1")),
            holders: vec![],
        };
        let reply = PrepareReply::Promised {
            log_end: Some(3),
            config: Some(later.clone()),
        };
        assert_eq!(
            c.on_prepare_reply(&b("b2"), &reply),
            Outcome::Lost {
                newer_term: Term(5),
                config: Some(later)
            }
        );
    }

    #[test]
    fn takeover_with_a_witness_then_won_on_a_majority_of_accepts() {
        let mut c = candidate(2, &["b1"]);
        assert_eq!(c.voters(), &[b("b1"), b("b2"), b("b3")]);
        assert_eq!(
            c.on_prepare_reply(&b("b2"), &promise(Some(base()))),
            Outcome::Pending
        );
        // Not a voter: does not count.
        assert_eq!(
            c.on_prepare_reply(&b("b4"), &promise(None)),
            Outcome::Pending
        );
        // b1, the lost leader, may still hold its log and register: a
        // retirement must reach it.
        let expected = ReplicaConfig {
            term: Term(5),
            leader: b("b2"),
            followers: vec![b("b3")],
            witness: Some(b("b4")),
            holders: vec![b("b1")],
        };
        assert_eq!(
            c.on_prepare_reply(&b("b3"), &promise(Some(base()))),
            Outcome::Propose(expected.clone())
        );
        assert_eq!(c.log_ends().count(), 2);
        assert_eq!(c.on_commit_reply(&b("b2"), true, Term(5)), Outcome::Pending);
        assert_eq!(c.on_commit_reply(&b("b2"), true, Term(5)), Outcome::Pending);
        let won = Outcome::Won {
            config: expected,
            catching_up: vec![b("b3")],
        };
        assert_eq!(c.on_commit_reply(&b("b3"), true, Term(5)), won);
        assert_eq!(c.on_commit_reply(&b("b1"), true, Term(5)), won);
    }

    #[test]
    fn a_newer_config_or_promise_loses() {
        let mut c = candidate(2, &[]);
        let mut newer = base();
        newer.term = Term(5);
        let lost = c.on_prepare_reply(&b("b1"), &promise(Some(newer.clone())));
        assert_eq!(
            lost,
            Outcome::Lost {
                newer_term: Term(5),
                config: Some(newer)
            }
        );
        let mut c = candidate(2, &[]);
        let refused = PrepareReply::Refused {
            promised: Term(5),
            config: Some(base()),
            reason: Refusal::Older,
        };
        assert!(matches!(
            c.on_prepare_reply(&b("b3"), &refused),
            Outcome::Lost {
                newer_term: Term(5),
                ..
            }
        ));
        // Refused at the accept round: someone prepared a later term since.
        // One refusal leaves a majority that may still accept; a second
        // does not.
        let mut c = proposing();
        assert_eq!(
            c.on_commit_reply(&b("b3"), false, Term(6)),
            Outcome::Pending
        );
        assert!(matches!(
            c.on_commit_reply(&b("b1"), false, Term(7)),
            Outcome::Lost {
                newer_term: Term(7),
                ..
            }
        ));
    }

    /// b2's candidacy past its prepare round (b2 and b3 promised): it
    /// proposes its configuration.
    fn proposing() -> Candidacy {
        let mut c = candidate(2, &[]);
        c.on_prepare_reply(&b("b2"), &promise(None));
        assert!(matches!(
            c.on_prepare_reply(&b("b3"), &promise(None)),
            Outcome::Propose(_)
        ));
        c
    }

    /// A voter refuses the proposal (its floor rose past the term after
    /// the prepare round went on without it, or it promised the term
    /// elsewhere), but the candidate and the third voter accept it: it is
    /// chosen, and the candidate leads it.
    #[test]
    fn a_proposal_refused_by_one_voter_is_won_on_the_others() {
        let mut c = proposing();
        assert_eq!(
            c.on_commit_reply(&b("b1"), false, Term(5)),
            Outcome::Pending
        );
        assert_eq!(c.on_commit_reply(&b("b2"), true, Term(5)), Outcome::Pending);
        assert!(matches!(
            c.on_commit_reply(&b("b3"), true, Term(5)),
            Outcome::Won { .. }
        ));
    }

    #[test]
    fn a_lease_refusal_waits() {
        let t0 = Instant::now();
        let mut voter = Register::new(LEASE);
        assert!(voter.on_commit(&base()));
        voter.grant_lease(t0, &b("b1"), Term(4));
        let mut c = candidate(2, &[]);
        let reply = voter.on_prepare(t0, &b("b2"), Term(5), None);
        assert_eq!(c.on_prepare_reply(&b("b3"), &reply), Outcome::Pending);
        assert_eq!(c.lease_blocked_until(), Some(t0 + LEASE));
    }

    #[test]
    fn configs_for_each_replication_factor() {
        let won = |replicas, down: &[&str]| {
            let mut c = candidate(replicas, down);
            c.on_prepare_reply(&b("b2"), &promise(None));
            match c.on_prepare_reply(&b("b3"), &promise(None)) {
                Outcome::Propose(config) => config,
                other => panic!("{other:?}"),
            }
        };
        let r1 = won(1, &[]);
        assert!(r1.followers.is_empty() && r1.witness.is_none());
        let r3 = won(3, &["b3"]);
        assert_eq!(r3.followers, vec![b("b1"), b("b4")]);
        assert_eq!(r3.witness, None);
        let r2 = won(2, &["b1", "b3", "b4"]);
        assert_eq!(r2.followers, vec![b("b5")]);
        assert_eq!(r2.witness, None, "nobody left to witness");
    }
}
