//! One broker's per-channel register as a voter: the highest term it
//! promised, to whom, the configuration it accepted last, and the lease it
//! granted.
//!
//! `promised`, `promised_to` and `config` must be durable (written before a
//! reply leaves): a voter that forgot a promise could vote twice for one
//! term. They change only on configuration changes, never per publication.
//! The lease is volatile; a register read back after a restart
//! ([`Register::restarted`]) refuses to vote for one lease period, which
//! covers any lease granted before the crash.

use std::time::{Duration, Instant};

use switchboard_core::BrokerName;

use super::term::{ReplicaConfig, Term};

/// A lease this voter granted: it votes for nobody else until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// None: granted before a restart, to whoever it was.
    pub holder: Option<BrokerName>,
    pub until: Instant,
}

/// Why a voter refused to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A lease granted to another leader still runs.
    LeaseHeld { until: Instant },
    /// It already promised this term to another candidate, or a later term.
    Older,
}

/// A voter's answer to `Prepare{term}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareReply {
    /// Promised: `log_end` is the voter's log end when it is a data replica,
    /// `config` the last configuration it accepted (a candidate that sees a
    /// newer one than its own is out of date).
    Promised {
        log_end: Option<u64>,
        config: Option<ReplicaConfig>,
    },
    Refused {
        promised: Term,
        config: Option<ReplicaConfig>,
        reason: Refusal,
    },
}

/// One broker's register for one channel.
#[derive(Debug, Clone)]
pub struct Register {
    promised: Term,
    promised_to: Option<BrokerName>,
    config: Option<ReplicaConfig>,
    lease: Option<Lease>,
    lease_period: Duration,
}

impl Register {
    /// A register that never voted; `lease_period` is what every grant lasts.
    pub fn new(lease_period: Duration) -> Self {
        Self {
            promised: Term::ZERO,
            promised_to: None,
            config: None,
            lease: None,
            lease_period,
        }
    }

    /// The register of a channel this broker knows nothing of, or retired
    /// (docs/replication.md "Retiring an idle channel"): it promises and
    /// accepts nothing at or below `floor`, the highest term of any
    /// register it forgot, so that forgetting never lets it vote twice in
    /// one term nor take an old leader's appends.
    pub fn above(lease_period: Duration, floor: Term) -> Self {
        Self {
            promised: floor,
            ..Self::new(lease_period)
        }
    }

    /// Whether this register knows no configuration after `term`: it may
    /// be forgotten when `term`'s leader retires the channel. A later bare
    /// promise does not keep it: the floor it leaves keeps that promise,
    /// and a candidacy that never made a configuration carries nothing of
    /// the channel on (kept, it would let its candidate stand on `term`'s
    /// configuration with a log it forgot).
    pub fn settled_at(&self, term: Term) -> bool {
        self.config.as_ref().is_none_or(|c| c.term <= term)
    }

    /// The durable part read back after a restart at `now`: leases granted
    /// before the crash are unknown, so no vote for one lease period.
    pub fn restarted(&self, now: Instant) -> Self {
        Self {
            lease: Some(Lease {
                holder: None,
                until: now + self.lease_period,
            }),
            ..self.clone()
        }
    }

    /// A register rebuilt at `now` from its durable part (as a store kept
    /// it): like [`Self::restarted`], no vote for one lease period.
    pub fn recovered(
        lease_period: Duration,
        promised: Term,
        promised_to: Option<BrokerName>,
        config: Option<ReplicaConfig>,
        now: Instant,
    ) -> Self {
        Self {
            promised,
            promised_to,
            config,
            lease: None,
            lease_period,
        }
        .restarted(now)
    }

    pub fn promised(&self) -> Term {
        self.promised
    }

    pub fn promised_to(&self) -> Option<&BrokerName> {
        self.promised_to.as_ref()
    }

    pub fn config(&self) -> Option<&ReplicaConfig> {
        self.config.as_ref()
    }

    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// `Prepare{term}` from `candidate`. A repeated prepare from the same
    /// candidate for the same term is answered the same way (messages may be
    /// duplicated); `log_end` is this broker's log end if it is a data
    /// replica.
    pub fn on_prepare(
        &mut self,
        now: Instant,
        candidate: &BrokerName,
        term: Term,
        log_end: Option<u64>,
    ) -> PrepareReply {
        let again = term == self.promised && self.promised_to.as_ref() == Some(candidate);
        if term <= self.promised && !again {
            return self.refuse(Refusal::Older);
        }
        if let Some(lease) = &self.lease
            && lease.until > now
            && lease.holder.as_ref() != Some(candidate)
        {
            return self.refuse(Refusal::LeaseHeld { until: lease.until });
        }
        self.promised = term;
        self.promised_to = Some(candidate.clone());
        PrepareReply::Promised {
            log_end,
            config: self.config.clone(),
        }
    }

    fn refuse(&self, reason: Refusal) -> PrepareReply {
        PrepareReply::Refused {
            promised: self.promised,
            config: self.config.clone(),
            reason,
        }
    }

    /// `Commit{config}`: accepted (true) unless this voter promised a later
    /// term, or this term to another candidate. Accepting raises `promised`
    /// to the config's term.
    pub fn on_commit(&mut self, config: &ReplicaConfig) -> bool {
        if config.term < self.promised {
            return false;
        }
        // At its own term, only from the candidate it promised. A register
        // above a floor ([`Self::above`]) promised the floor to nobody it
        // remembers: it may have been to another candidate of that term.
        if config.term == self.promised && self.promised_to.as_ref() != Some(&config.leader) {
            return false;
        }
        self.promised = config.term;
        self.promised_to = Some(config.leader.clone());
        self.config = Some(config.clone());
        true
    }

    /// Learns `config` from a candidacy that lost to it (it was accepted by
    /// a voter, so it is the one proposal for its term) without voting:
    /// a broker that stands next stands on it. Raises `promised` to its term
    /// if lower (only ever a restriction); an older config changes nothing.
    pub fn learn(&mut self, config: &ReplicaConfig) {
        if self.config.as_ref().is_some_and(|c| c.term >= config.term) {
            return;
        }
        if config.term > self.promised {
            self.promised = config.term;
            self.promised_to = Some(config.leader.clone());
        }
        self.config = Some(config.clone());
    }

    /// A renewal from `leader` for `term`, received at `now`: granted (the
    /// lease's end) only to the broker this register last promised, for the
    /// term it promised. A lease never shortens.
    pub fn grant_lease(
        &mut self,
        now: Instant,
        leader: &BrokerName,
        term: Term,
    ) -> Option<Instant> {
        if term != self.promised || self.promised_to.as_ref() != Some(leader) {
            return None;
        }
        let until = now + self.lease_period;
        let until = match &self.lease {
            Some(l) if l.holder.as_ref() == Some(leader) => until.max(l.until),
            _ => until,
        };
        self.lease = Some(Lease {
            holder: Some(leader.clone()),
            until,
        });
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(800);

    #[test]
    fn a_register_above_a_floor_votes_only_for_later_terms() {
        let now = Instant::now();
        let mut r = Register::above(LEASE, Term(7));
        assert!(matches!(
            r.on_prepare(now, &b("b1"), Term(7), None),
            PrepareReply::Refused {
                promised: Term(7),
                reason: Refusal::Older,
                ..
            }
        ));
        assert!(matches!(
            r.on_prepare(now, &b("b1"), Term(8), None),
            PrepareReply::Promised { config: None, .. }
        ));
        // A bare promise keeps nothing from being retired; a later
        // configuration does.
        assert!(r.settled_at(Term(7)));
        let later = ReplicaConfig {
            term: Term(8),
            leader: b("b1"),
            followers: vec![b("b2")],
            witness: None,
            holders: vec![],
        };
        assert!(r.on_commit(&later));
        assert!(r.settled_at(Term(8)) && !r.settled_at(Term(7)));
        let old = ReplicaConfig {
            term: Term(6),
            leader: b("b2"),
            followers: vec![b("b1")],
            witness: None,
            holders: vec![],
        };
        assert!(!Register::above(LEASE, Term(7)).on_commit(&old));
        // Nor the floor's own term: the promise it forgot may have been to
        // another candidate (model seed 13707 of 20,000: a voter promised
        // term 7 to one, forgot the channel, and accepted another's term 7).
        let at_floor = ReplicaConfig {
            term: Term(7),
            ..old.clone()
        };
        assert!(!Register::above(LEASE, Term(7)).on_commit(&at_floor));
    }

    fn b(name: &str) -> BrokerName {
        name.into()
    }

    fn config(term: u64, leader: &str) -> ReplicaConfig {
        ReplicaConfig {
            term: Term(term),
            leader: b(leader),
            followers: vec![b("b2")],
            witness: Some(b("b3")),
            holders: vec![],
        }
    }

    fn promised(reply: &PrepareReply) -> bool {
        matches!(reply, PrepareReply::Promised { .. })
    }

    #[test]
    fn one_prepare_per_term() {
        let now = Instant::now();
        let mut r = Register::new(LEASE);
        assert!(promised(&r.on_prepare(now, &b("b1"), Term(1), Some(0))));
        // A duplicate from the same candidate is answered again.
        assert!(promised(&r.on_prepare(now, &b("b1"), Term(1), Some(0))));
        let other = r.on_prepare(now, &b("b2"), Term(1), None);
        assert_eq!(
            other,
            PrepareReply::Refused {
                promised: Term(1),
                config: None,
                reason: Refusal::Older
            }
        );
        assert_eq!(r.promised_to(), Some(&b("b1")));
    }

    #[test]
    fn promised_never_decreases() {
        let now = Instant::now();
        let mut r = Register::new(LEASE);
        assert!(promised(&r.on_prepare(now, &b("b1"), Term(5), None)));
        assert!(!promised(&r.on_prepare(now, &b("b2"), Term(3), None)));
        assert!(!r.on_commit(&config(4, "b2")));
        assert_eq!(r.promised(), Term(5));
        assert!(r.on_commit(&config(5, "b1")));
        assert_eq!(r.config().unwrap().term, Term(5));
        // The same term led by someone else than the promised candidate.
        let mut r2 = Register::new(LEASE);
        r2.on_prepare(now, &b("b1"), Term(2), None);
        assert!(!r2.on_commit(&config(2, "b2")));
        // A member that never voted accepts a newer config.
        let mut fresh = Register::new(LEASE);
        assert!(fresh.on_commit(&config(9, "b1")));
        assert_eq!(fresh.promised(), Term(9));
    }

    #[test]
    fn a_learned_config_is_only_ever_newer() {
        let now = Instant::now();
        let mut r = Register::new(LEASE);
        assert!(promised(&r.on_prepare(now, &b("b2"), Term(2), None)));
        r.learn(&config(3, "b1"));
        assert_eq!((r.promised(), r.promised_to()), (Term(3), Some(&b("b1"))));
        r.learn(&config(1, "b2"));
        assert_eq!(r.config().unwrap().term, Term(3));
        // Promised further already: the promise stays.
        assert!(promised(&r.on_prepare(now, &b("b2"), Term(6), None)));
        r.learn(&config(4, "b1"));
        assert_eq!((r.promised(), r.config().unwrap().term), (Term(6), Term(4)));
        assert!(!r.on_commit(&config(5, "b1")));
    }

    #[test]
    fn no_vote_while_a_lease_to_another_leader_runs() {
        let t0 = Instant::now();
        let mut r = Register::new(LEASE);
        assert!(r.on_commit(&config(1, "b1")));
        assert_eq!(r.grant_lease(t0, &b("b1"), Term(1)), Some(t0 + LEASE));
        let reply = r.on_prepare(t0 + LEASE / 2, &b("b2"), Term(2), None);
        assert_eq!(
            reply,
            PrepareReply::Refused {
                promised: Term(1),
                config: Some(config(1, "b1")),
                reason: Refusal::LeaseHeld { until: t0 + LEASE }
            }
        );
        // The lease holder itself may move on (refill, hand-over).
        let mut r2 = r.clone();
        assert!(promised(&r2.on_prepare(t0, &b("b1"), Term(2), None)));
        // Once the lease ran out, another candidate gets the vote.
        assert!(promised(&r.on_prepare(t0 + LEASE, &b("b2"), Term(2), None)));
    }

    #[test]
    fn leases_go_only_to_the_promised_leader_of_the_promised_term() {
        let t0 = Instant::now();
        let mut r = Register::new(LEASE);
        assert!(r.on_commit(&config(1, "b1")));
        assert_eq!(r.grant_lease(t0, &b("b2"), Term(1)), None);
        assert!(promised(&r.on_prepare(t0, &b("b2"), Term(2), None)));
        // The old leader is fenced: no lease for term 1 any more.
        assert_eq!(r.grant_lease(t0, &b("b1"), Term(1)), None);
        assert!(r.grant_lease(t0, &b("b2"), Term(2)).is_some());
    }

    #[test]
    fn a_restarted_register_keeps_its_promise_and_waits_a_lease() {
        let t0 = Instant::now();
        let mut r = Register::new(LEASE);
        assert!(promised(&r.on_prepare(t0, &b("b1"), Term(3), None)));
        let mut back = r.restarted(t0);
        assert_eq!(back.promised(), Term(3));
        assert!(matches!(
            back.on_prepare(t0 + LEASE / 2, &b("b2"), Term(4), None),
            PrepareReply::Refused {
                reason: Refusal::LeaseHeld { .. },
                ..
            }
        ));
        assert!(!promised(&back.on_prepare(
            t0 + LEASE,
            &b("b2"),
            Term(3),
            None
        )));
        assert!(promised(&back.on_prepare(
            t0 + LEASE,
            &b("b2"),
            Term(4),
            None
        )));
    }
}
