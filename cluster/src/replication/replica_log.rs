//! A data replica's log of one channel: which appends it stores, what it
//! drops when it adopts a new term, and whether it holds everything that
//! may have been committed (only then may it stand as a candidate).
//!
//! Entries are opaque `(offset, payload)`; offsets start at 1 and are
//! contiguous. The log is volatile: a restarted broker starts from
//! [`ReplicaLog::lost`], which may not stand until a leader has caught it up.

use std::collections::VecDeque;

use switchboard_core::BrokerName;

use super::{register::Register, term::Term};

/// A follower's answer to `Append{term, offset}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendReply {
    /// Stored: the log holds every offset up to `end` as the leader sent it.
    Stored { end: u64 },
    /// The sender's term is over: this broker promised `promised`.
    Stale { promised: Term },
    /// Not the next offset: send from `next`.
    Gap { next: u64 },
    /// This broker promised the term but has not adopted its configuration
    /// yet (the `Commit` is late or lost): send it again.
    NotAdopted,
}

/// One data replica's log.
#[derive(Debug, Clone)]
pub struct ReplicaLog<P> {
    /// The term whose leader this log follows (or leads).
    term: Term,
    /// Offset of the first entry kept; earlier ones left the window.
    first: u64,
    entries: VecDeque<P>,
    /// Known committed: every entry up to here is stored on every data
    /// replica and is the same everywhere.
    committed: u64,
    /// Everything committed before this log adopted `term` lies at or
    /// below this offset (the leader's log end when it sent the
    /// configuration); later commits needed this log to store them.
    floor: u64,
    /// Lost in a restart: it may not stand until it adopts a term again.
    lost: bool,
    /// Handed over by the leader of `term` as it stepped down at its
    /// committed offset (a planned move): it may stand on that term
    /// though it is none of its data replicas ([`Self::is_handed_for`]).
    handed: bool,
    /// Made afresh after this broker forgot channels up to this term
    /// ([`Self::above`]): a configuration of this term or older was made by
    /// an incarnation of the channel this log knows nothing of.
    made_above: Term,
    /// The configuration this broker last proposed as a candidate (its
    /// term) and the voters it proposed it to, its base's
    /// ([`Self::proposed_to`]).
    proposed: Option<(Term, Vec<BrokerName>)>,
}

impl<P: Clone> Default for ReplicaLog<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone> ReplicaLog<P> {
    /// The empty log of a channel that has nothing committed yet.
    pub fn new() -> Self {
        Self {
            term: Term::ZERO,
            first: 1,
            entries: VecDeque::new(),
            committed: 0,
            floor: 0,
            lost: false,
            handed: false,
            made_above: Term::ZERO,
            proposed: None,
        }
    }

    /// The empty log of a channel new here on a broker that forgot
    /// channels up to `floor` (docs/replication.md "Retiring an idle
    /// channel"): like [`Self::new`], but it holds nothing of any
    /// configuration of `floor` or older.
    pub fn above(floor: Term) -> Self {
        Self {
            made_above: floor,
            ..Self::new()
        }
    }

    /// The floor this log was made above ([`Self::above`]).
    pub fn made_above(&self) -> Term {
        self.made_above
    }

    /// The log the leader of `term` handed over with the channel as it
    /// stepped down (a planned move: drain, or a broker that joined or came
    /// back): `entries` from offset `first`, everything up to `committed`
    /// (their end) committed, and nothing committed in `term` after them,
    /// since its leader stepped down at that offset.
    pub fn handed(term: Term, first: u64, entries: impl IntoIterator<Item = P>) -> Self {
        let entries: VecDeque<P> = entries.into_iter().collect();
        let end = first - 1 + entries.len() as u64;
        Self {
            term,
            first,
            entries,
            committed: end,
            floor: end,
            lost: false,
            handed: true,
            made_above: Term::ZERO,
            proposed: None,
        }
    }

    /// The log a follower of `term` handed back to the term's leader,
    /// restarted without its own (a hand-back): like [`Self::handed`],
    /// except that only up to `committed` (what the follower knew
    /// committed) is known committed. The rest holds every later commit
    /// of `term` (each needed the follower), but may hold appends that
    /// were never committed, which a later term's leader may replace.
    pub fn handed_back(
        term: Term,
        first: u64,
        entries: impl IntoIterator<Item = P>,
        committed: u64,
    ) -> Self {
        let mut log = Self::handed(term, first, entries);
        log.committed = committed.min(log.committed);
        log
    }

    /// The log of a broker that restarted and lost what it held.
    pub fn lost() -> Self {
        Self {
            lost: true,
            ..Self::new()
        }
    }

    pub fn term(&self) -> Term {
        self.term
    }

    /// Follows no term, holds no entry and proposed nothing (it may be
    /// lost: what a broker held before a restart is gone either way).
    pub fn holds_nothing(&self) -> bool {
        self.term == Term::ZERO && self.end() == 0 && self.proposed.is_none()
    }

    /// Holds nothing a fresh log would not: [`Self::holds_nothing`], and
    /// not lost.
    pub fn is_blank(&self) -> bool {
        self.holds_nothing() && !self.lost
    }

    /// Lost in a restart, and no term adopted since.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// The last offset held (0: none).
    pub fn end(&self) -> u64 {
        self.first - 1 + self.entries.len() as u64
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// What a leader stepping down hands over ([`Self::handed`]): every
    /// offset that may have been committed. That is more than the commits
    /// it saw: a new leader learns of its predecessors' last commits only
    /// as it commits on top of them, so its whole log at the start of its
    /// term (the floor) counts.
    pub fn handover_end(&self) -> u64 {
        self.committed.max(self.floor).min(self.end())
    }

    /// The first offset held (the log's end + 1 when it holds none).
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Starts an empty-beyond-committed log at `first`: everything before
    /// it is committed and out of the leader's window, so there is nothing
    /// to fetch. Only forward, and only over what this log does not hold.
    pub fn skip_to(&mut self, first: u64) {
        if first <= self.end() + 1 {
            return;
        }
        self.entries.clear();
        self.first = first;
        self.committed = self.committed.max(first - 1);
    }

    pub fn get(&self, offset: u64) -> Option<&P> {
        let i = offset.checked_sub(self.first)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    /// Whether this log holds every entry that may have been committed up
    /// to and in `term`: it follows `term`, was not lost since, and reached
    /// the leader's log end as of when it adopted the term (later commits
    /// needed it to store them).
    pub fn is_complete_for(&self, term: Term) -> bool {
        !self.lost && self.term == term && self.end() >= self.floor
    }

    /// Whether this log was handed over by `term`'s leader, which stepped
    /// down at its end ([`Self::handed`]), and holds it still: its holder
    /// may stand on `term` as if it were one of its data replicas.
    pub fn is_handed_for(&self, term: Term) -> bool {
        self.handed && self.is_complete_for(term)
    }

    /// Follows `term`'s leader, whose log ended at `leader_end` when it sent
    /// the configuration (not when it won: a replica that lost its log and
    /// adopts the term again later must reach what was committed since).
    /// What lies beyond the known-committed offset is dropped: it may differ
    /// from the new leader's log, and the leader sends it again. Older or
    /// repeated terms change nothing.
    pub fn adopt(&mut self, term: Term, leader_end: u64) {
        if term <= self.term {
            return;
        }
        self.truncate_after(self.committed);
        self.term = term;
        self.floor = leader_end;
        self.lost = false;
        self.handed = false;
    }

    /// This broker, as a candidate, proposed its configuration of `term` to
    /// `voters` (its base's). Volatile, like the log: a broker that
    /// restarted stands on nothing until it follows a term again.
    pub fn proposed(&mut self, term: Term, voters: Vec<BrokerName>) {
        self.proposed = Some((term, voters));
    }

    /// The voters this broker proposed its configuration of `term` to, if
    /// it did: a configuration accepted by this broker's own register may
    /// not have been chosen, and if it never led it, it stands on it only
    /// with a majority of those voters too (`Candidacy::new`).
    pub fn proposed_to(&self, term: Term) -> Option<&[BrokerName]> {
        let (t, voters) = self.proposed.as_ref()?;
        (*t == term).then_some(voters.as_slice())
    }

    /// Drops everything held: the log is of an incarnation of the channel
    /// that ended (it was retired, or its replicas were all lost, and it
    /// starts at offset 1 again in a new epoch). What it was made above
    /// stays.
    pub fn start_over(&mut self) {
        *self = Self {
            made_above: self.made_above,
            ..Self::new()
        };
    }

    /// Leads `term`: this log is the reference, nothing is dropped.
    pub fn lead(&mut self, term: Term) {
        self.term = term;
        self.floor = self.end();
        self.lost = false;
        self.handed = false;
    }

    /// The leader's own append.
    pub fn push(&mut self, payload: P) -> u64 {
        self.entries.push_back(payload);
        self.end()
    }

    /// Marks offsets up to `upto` committed (the leader's commit, or the
    /// commit a follower learns with an append).
    pub fn mark_committed(&mut self, upto: u64) {
        self.committed = self.committed.max(upto.min(self.end()));
    }

    /// Drops committed entries before `offset` (the history window); the
    /// log still counts them as held.
    pub fn forget_before(&mut self, offset: u64) {
        let offset = offset.min(self.committed + 1);
        while self.first < offset && !self.entries.is_empty() {
            self.entries.pop_front();
            self.first += 1;
        }
    }

    fn truncate_after(&mut self, offset: u64) {
        let keep = offset.saturating_sub(self.first - 1);
        self.entries
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
    }

    /// `Append{term, offset, payload, committed}` from the leader of `term`;
    /// `register` is this broker's register for the channel, the arbiter of
    /// which term is current.
    pub fn on_append(
        &mut self,
        register: &Register,
        term: Term,
        offset: u64,
        payload: P,
        committed: u64,
    ) -> AppendReply {
        let promised = register.promised();
        if term < promised || term < self.term {
            return AppendReply::Stale {
                promised: promised.max(self.term),
            };
        }
        if term > promised || term > self.term {
            return AppendReply::NotAdopted;
        }
        let end = self.end();
        if offset > end + 1 {
            return AppendReply::Gap { next: end + 1 };
        }
        if offset == end + 1 {
            self.entries.push_back(payload);
        }
        // Up to `offset` this log is the leader's: the same leader sent it
        // in order since the term was adopted, above the committed prefix.
        self.mark_committed(committed.min(offset));
        AppendReply::Stored { end: offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::term::ReplicaConfig;
    use std::time::Duration;

    fn register(term: u64) -> Register {
        let mut r = Register::new(Duration::from_millis(800));
        assert!(r.on_commit(&ReplicaConfig {
            term: Term(term),
            leader: "b1".into(),
            followers: vec!["b2".into()],
            witness: Some("b3".into()),
            holders: vec![],
        }));
        r
    }

    fn follower(term: u64) -> ReplicaLog<&'static str> {
        let mut log = ReplicaLog::new();
        log.adopt(Term(term), 0);
        log
    }

    #[test]
    fn a_handed_log_is_complete_for_its_term_until_it_follows_another() {
        let log = ReplicaLog::handed(Term(2), 5, ["e", "f", "g"]);
        assert_eq!((log.first(), log.end(), log.committed()), (5, 7, 7));
        assert_eq!(log.get(6), Some(&"f"));
        assert!(log.is_handed_for(Term(2)) && log.is_complete_for(Term(2)));
        assert!(!log.is_handed_for(Term(1)) && !log.is_handed_for(Term(3)));
        let mut led = log.clone();
        led.lead(Term(3));
        assert!(!led.is_handed_for(Term(3)) && led.is_complete_for(Term(3)));
        let mut followed = log;
        followed.adopt(Term(4), 9);
        assert!(!followed.is_handed_for(Term(4)));
        // Nothing held: the log starts after what was committed.
        let empty: ReplicaLog<&str> = ReplicaLog::handed(Term(2), 8, []);
        assert_eq!((empty.end(), empty.committed()), (7, 7));
        assert!(empty.is_handed_for(Term(2)));
    }

    #[test]
    fn a_log_behind_the_leaders_window_starts_at_it() {
        let reg = register(1);
        let mut log = ReplicaLog::new();
        log.adopt(Term(1), 50);
        assert_eq!(
            log.on_append(&reg, Term(1), 41, "x", 40),
            AppendReply::Gap { next: 1 }
        );
        log.skip_to(41);
        assert_eq!((log.first(), log.end(), log.committed()), (41, 40, 40));
        assert_eq!(
            log.on_append(&reg, Term(1), 41, "x", 40),
            AppendReply::Stored { end: 41 }
        );
        // Never backwards, never over what is held.
        log.skip_to(10);
        assert_eq!(log.first(), 41);
        assert_eq!(log.get(41), Some(&"x"));
    }

    #[test]
    fn stores_in_order_and_reports_gaps() {
        let reg = register(1);
        let mut log = follower(1);
        assert_eq!(
            log.on_append(&reg, Term(1), 1, "a", 0),
            AppendReply::Stored { end: 1 }
        );
        assert_eq!(
            log.on_append(&reg, Term(1), 3, "c", 0),
            AppendReply::Gap { next: 2 }
        );
        assert_eq!(
            log.on_append(&reg, Term(1), 2, "b", 1),
            AppendReply::Stored { end: 2 }
        );
        // A duplicate is acknowledged again, not stored twice.
        assert_eq!(
            log.on_append(&reg, Term(1), 2, "b", 1),
            AppendReply::Stored { end: 2 }
        );
        assert_eq!(log.end(), 2);
        assert_eq!(log.committed(), 1);
        assert_eq!(log.get(2), Some(&"b"));
    }

    #[test]
    fn an_older_term_is_stale_and_a_newer_one_not_adopted() {
        let reg = register(2);
        let mut log = follower(2);
        assert_eq!(
            log.on_append(&reg, Term(1), 1, "x", 0),
            AppendReply::Stale { promised: Term(2) }
        );
        assert_eq!(
            log.on_append(&reg, Term(3), 1, "x", 0),
            AppendReply::NotAdopted
        );
        // Promised to a newer candidate: the current leader is fenced.
        let mut newer = reg.clone();
        newer.on_prepare(std::time::Instant::now(), &"b2".into(), Term(3), None);
        assert_eq!(
            log.on_append(&newer, Term(2), 1, "x", 0),
            AppendReply::Stale { promised: Term(3) }
        );
        assert_eq!(log.end(), 0);
        // Promised, but the config not received yet.
        let mut log2 = follower(1);
        assert_eq!(
            log2.on_append(&reg, Term(2), 1, "x", 0),
            AppendReply::NotAdopted
        );
    }

    #[test]
    fn adopting_a_term_drops_the_uncommitted_suffix_and_must_catch_up() {
        let reg = register(1);
        let mut log = follower(1);
        for (i, p) in ["a", "b", "c"].into_iter().enumerate() {
            log.on_append(&reg, Term(1), i as u64 + 1, p, 1);
        }
        assert_eq!(log.committed(), 1);
        assert!(log.is_complete_for(Term(1)));
        log.adopt(Term(2), 2);
        assert_eq!(log.end(), 1);
        assert!(!log.is_complete_for(Term(2)));
        let reg2 = register(2);
        assert_eq!(
            log.on_append(&reg2, Term(2), 3, "z", 1),
            AppendReply::Gap { next: 2 }
        );
        assert_eq!(
            log.on_append(&reg2, Term(2), 2, "b", 1),
            AppendReply::Stored { end: 2 }
        );
        assert!(log.is_complete_for(Term(2)));
        // Adopting the same or an older term again changes nothing.
        log.adopt(Term(2), 9);
        log.adopt(Term(1), 9);
        assert!(log.is_complete_for(Term(2)));
    }

    #[test]
    fn a_lost_log_may_not_stand_until_caught_up_in_a_term() {
        let mut log: ReplicaLog<&str> = ReplicaLog::lost();
        assert!(!log.is_complete_for(Term(0)));
        log.adopt(Term(3), 1);
        assert!(!log.is_complete_for(Term(3)));
        let reg = register(3);
        log.on_append(&reg, Term(3), 1, "a", 1);
        assert!(log.is_complete_for(Term(3)));
        assert!(!log.is_complete_for(Term(4)));
    }

    #[test]
    fn the_leader_keeps_its_log_and_the_window_moves() {
        let mut log: ReplicaLog<&str> = ReplicaLog::new();
        log.push("a");
        log.push("b");
        log.lead(Term(5));
        assert!(log.is_complete_for(Term(5)));
        assert_eq!(log.push("c"), 3);
        log.forget_before(3);
        assert_eq!(log.get(1), Some(&"a"), "nothing committed yet");
        log.mark_committed(9);
        assert_eq!(log.committed(), 3);
        log.forget_before(3);
        assert_eq!(log.get(2), None);
        assert_eq!(log.get(3), Some(&"c"));
        assert_eq!(log.end(), 3);
        // Before the window: the leader must restart the follower from a
        // snapshot (outside this module).
        let reg = register(5);
        let mut f: ReplicaLog<&str> = ReplicaLog::new();
        f.adopt(Term(5), 3);
        f.forget_before(1);
        assert_eq!(
            f.on_append(&reg, Term(5), 3, "c", 3),
            AppendReply::Gap { next: 1 }
        );
    }
}
