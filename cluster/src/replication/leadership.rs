//! The leader's side of one channel in one term: offsets it assigns, which
//! followers still owe an acknowledgement, what is committed, and the
//! leases that let it serve reads.
//!
//! Committed means stored on every follower of the term (and the leader):
//! a later leader is always one of them. A leader holds this only while its
//! own register has promised nothing newer; the driver drops it the moment
//! the register does, or a follower answers `Stale`.

use std::{
    collections::BTreeMap,
    ops::Range,
    time::{Duration, Instant},
};

use switchboard_core::BrokerName;

use super::term::{ReplicaConfig, Term};

/// How far one follower got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Every offset up to here is stored there.
    acked: u64,
    /// The next offset to send there.
    next: u64,
    /// The resend under way after a gap, `(from, upto)`: reordered appends
    /// report gaps inside it many times, and the one resend answers them.
    resending: Option<(u64, u64)>,
}

/// A leader's state for one channel and one term.
#[derive(Debug, Clone)]
pub struct Leadership {
    config: ReplicaConfig,
    /// The last offset assigned.
    end: u64,
    committed: u64,
    followers: BTreeMap<BrokerName, Progress>,
    /// Per voter other than the leader: when the lease it granted ends, as
    /// counted here.
    leases: BTreeMap<BrokerName, Instant>,
    lease_hold: Duration,
}

/// The share of a granted lease a leader counts on: voters count their
/// lease from when the renewal arrived, the leader from when it sent it,
/// and this margin absorbs clock *rates* differing by up to 10%.
const LEASE_HOLD_NUM: u32 = 9;
const LEASE_HOLD_DEN: u32 = 10;

impl Leadership {
    /// Leads `config` with a log ending at `log_end` of which `committed` is
    /// known committed. Offsets after `committed` (left by earlier terms)
    /// commit once every follower stores them; they are reported by the
    /// first [`Leadership::append`] or [`Leadership::on_ack`]. `lease` is
    /// the voters' lease period.
    pub fn new(config: ReplicaConfig, log_end: u64, committed: u64, lease: Duration) -> Self {
        let followers = config
            .followers
            .iter()
            .map(|f| {
                let p = Progress {
                    acked: 0,
                    next: log_end + 1,
                    resending: None,
                };
                (f.clone(), p)
            })
            .collect();
        Self {
            config,
            end: log_end,
            committed: committed.min(log_end),
            followers,
            leases: BTreeMap::new(),
            lease_hold: lease * LEASE_HOLD_NUM / LEASE_HOLD_DEN,
        }
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    pub fn term(&self) -> Term {
        self.config.term
    }

    /// The last offset assigned. Sent with the configuration to a member
    /// (`ReplicaLog::adopt`): everything committed so far lies at or below
    /// it, so a follower that reached it holds every committed entry.
    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Assigns the next offset to a publication; `committed` is what became
    /// committed by it (only with no followers: R = 1).
    pub fn append(&mut self) -> (u64, Range<u64>) {
        self.end += 1;
        (self.end, self.advance())
    }

    /// Everything up to this offset is stored on `follower`.
    pub fn acked(&self, follower: &BrokerName) -> Option<u64> {
        self.followers.get(follower).map(|p| p.acked)
    }

    /// The followers that have not yet stored `offset`.
    pub fn owing(&self, offset: u64) -> Vec<BrokerName> {
        self.followers
            .iter()
            .filter(|(_, p)| p.acked < offset)
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// What to send `follower` now (new appends, or a resend from where it
    /// said it is); marks it sent.
    pub fn to_send(&mut self, follower: &BrokerName) -> Range<u64> {
        let end = self.end;
        match self.followers.get_mut(follower) {
            Some(p) => {
                let range = p.next..end + 1;
                p.next = end + 1;
                range
            }
            None => 0..0,
        }
    }

    /// Every offset `follower` has not acknowledged: to send again when
    /// appends may have been lost.
    pub fn unacked(&mut self, follower: &BrokerName) -> Range<u64> {
        if let Some(p) = self.followers.get_mut(follower) {
            p.next = p.acked + 1;
            p.resending = None;
        }
        self.to_send(follower)
    }

    /// `follower` stored everything up to `end`; returns the offsets that
    /// became committed, in order.
    pub fn on_ack(&mut self, follower: &BrokerName, end: u64) -> Range<u64> {
        if let Some(p) = self.followers.get_mut(follower) {
            p.acked = p.acked.max(end.min(self.end));
            p.next = p.next.max(p.acked + 1);
            if p.resending.is_some_and(|(_, upto)| p.acked >= upto) {
                p.resending = None;
            }
        }
        self.advance()
    }

    /// `follower` needs offsets from `next` on: returns what to send again
    /// (nothing if that resend is already under way).
    pub fn on_gap(&mut self, follower: &BrokerName, next: u64) -> Range<u64> {
        let Some(p) = self.followers.get_mut(follower) else {
            return 0..0;
        };
        // It holds everything before `next`.
        p.acked = p.acked.max(next.saturating_sub(1).min(self.end));
        if let Some((from, upto)) = p.resending
            && from <= next
            && p.acked < upto
        {
            return 0..0;
        }
        p.resending = Some((next, self.end));
        p.next = next;
        self.to_send(follower)
    }

    fn advance(&mut self) -> Range<u64> {
        let stored = self
            .followers
            .values()
            .map(|p| p.acked)
            .min()
            .unwrap_or(self.end);
        let from = self.committed + 1;
        self.committed = self.committed.max(stored);
        from..self.committed + 1
    }

    /// `voter` granted the renewal this leader sent at `sent_at`.
    pub fn on_lease_granted(&mut self, voter: &BrokerName, sent_at: Instant) {
        if *voter == self.config.leader || !self.config.is_voter(voter) {
            return;
        }
        let until = sent_at + self.lease_hold;
        let entry = self.leases.entry(voter.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Whether a majority of the voters (this leader included) hold a lease
    /// for it at `now`: only then may it serve history, recovery and
    /// presence reads.
    pub fn may_serve_reads(&self, now: Instant) -> bool {
        let held = self.leases.values().filter(|&&until| until > now).count();
        1 + held >= self.config.majority()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1000);

    fn b(n: &str) -> BrokerName {
        n.into()
    }

    fn config(followers: &[&str], witness: Option<&str>) -> ReplicaConfig {
        ReplicaConfig {
            term: Term(3),
            leader: b("b1"),
            followers: followers.iter().map(|&f| b(f)).collect(),
            witness: witness.map(b),
            holders: vec![],
        }
    }

    #[test]
    fn committed_once_every_follower_stored_it_in_order() {
        let mut l = Leadership::new(config(&["b2", "b3"], None), 0, 0, LEASE);
        assert_eq!(l.append(), (1, 1..1));
        assert_eq!(l.append(), (2, 1..1));
        assert_eq!(l.to_send(&b("b2")), 1..3);
        assert_eq!(l.to_send(&b("b2")), 3..3);
        assert_eq!(l.owing(1), vec![b("b2"), b("b3")]);
        assert_eq!(l.on_ack(&b("b2"), 2), 1..1);
        assert_eq!(l.owing(2), vec![b("b3")]);
        assert_eq!(l.acked(&b("b2")), Some(2));
        assert_eq!(l.on_ack(&b("b3"), 1), 1..2);
        assert_eq!(l.on_ack(&b("b3"), 2), 2..3);
        assert_eq!(l.committed(), 2);
        // A late duplicate ack changes nothing.
        assert_eq!(l.on_ack(&b("b3"), 1), 3..3);
        // An ack from a broker that is not a follower counts for nothing.
        assert_eq!(l.on_ack(&b("b9"), 2), 3..3);
    }

    #[test]
    fn a_lone_leader_commits_at_once() {
        let mut l = Leadership::new(config(&[], None), 4, 2, LEASE);
        assert_eq!(l.append(), (5, 3..6));
        assert!(l.may_serve_reads(Instant::now()));
    }

    #[test]
    fn earlier_terms_entries_commit_when_every_follower_has_them() {
        // Won with 5 entries of which 3 are known committed.
        let mut l = Leadership::new(config(&["b2"], Some("b3")), 5, 3, LEASE);
        assert_eq!(l.committed(), 3);
        assert_eq!(l.to_send(&b("b2")), 6..6);
        // The follower is behind: resend from where it is, once however
        // many reordered appends report the same gap.
        assert_eq!(l.on_gap(&b("b2"), 4), 4..6);
        assert_eq!(l.on_gap(&b("b2"), 4), 0..0);
        assert_eq!(l.on_gap(&b("b2"), 5), 0..0);
        // Further back than the resend under way: resend from there.
        assert_eq!(l.on_gap(&b("b2"), 3), 3..6);
        assert_eq!(l.committed(), 3);
        assert_eq!(l.on_ack(&b("b2"), 5), 4..6);
        l.append();
        // A gap after the resend completed is answered again.
        assert_eq!(l.on_gap(&b("b2"), 6), 6..7);
        assert_eq!(l.unacked(&b("b2")), 6..7);
    }

    #[test]
    fn reads_need_a_majority_lease_counted_from_the_send() {
        let t0 = Instant::now();
        let mut l = Leadership::new(config(&["b2"], Some("b3")), 0, 0, LEASE);
        assert!(!l.may_serve_reads(t0));
        // A grant from a non-voter or from itself does not count.
        l.on_lease_granted(&b("b9"), t0);
        l.on_lease_granted(&b("b1"), t0);
        assert!(!l.may_serve_reads(t0));
        l.on_lease_granted(&b("b3"), t0);
        assert!(l.may_serve_reads(t0 + LEASE / 2));
        // Counted from the send, with the margin: over before the voter's.
        assert!(!l.may_serve_reads(t0 + LEASE * 9 / 10));
        // R = 3: the third data replica is a voter, the fourth member not.
        let mut l3 = Leadership::new(config(&["b2", "b3"], None), 0, 0, LEASE);
        l3.on_lease_granted(&b("b2"), t0);
        assert!(l3.may_serve_reads(t0));
    }
}
