//! A follower's watch over the leaders it follows, per broker pair (not per
//! channel: one stream and one renewal cover every channel a pair shares),
//! and when to stand for their channels (docs/replication.md, triggers):
//! once a leader's stream has ended (a killed process resets its
//! connections at once) or it has been silent for longer than `silence`,
//! and only after every lease this broker granted it has run out. Gossip is
//! not waited for.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use switchboard_core::BrokerName;

#[derive(Debug, Clone, Copy)]
struct Watch {
    /// When the leader was last heard from (an append, a renewal).
    heard: Instant,
    /// Its stream to this broker ended, and has not been opened again.
    ended: bool,
    /// The end of the latest lease this broker granted it.
    lease_until: Option<Instant>,
}

/// The leaders one broker follows.
#[derive(Debug, Clone, Default)]
pub struct Vigil {
    leaders: BTreeMap<BrokerName, Watch>,
}

impl Vigil {
    pub fn new() -> Self {
        Self::default()
    }

    /// `leader`'s stream is (again) open at `now`.
    pub fn opened(&mut self, leader: &BrokerName, now: Instant) {
        let w = self.watch(leader, now);
        w.ended = false;
        w.heard = now;
    }

    /// A message from `leader` at `now`.
    pub fn heard(&mut self, leader: &BrokerName, now: Instant) {
        let w = self.watch(leader, now);
        w.heard = w.heard.max(now);
    }

    /// This broker granted `leader` a lease running until `until`.
    pub fn granted(&mut self, leader: &BrokerName, until: Instant, now: Instant) {
        let w = self.watch(leader, now);
        w.lease_until = Some(w.lease_until.map_or(until, |u| u.max(until)));
    }

    /// `leader`'s stream ended at `now`.
    pub fn ended(&mut self, leader: &BrokerName, now: Instant) {
        self.watch(leader, now).ended = true;
    }

    /// `leader` no longer leads anything here (its channels moved, or a
    /// takeover of them was started): stop watching it.
    pub fn forget(&mut self, leader: &BrokerName) {
        self.leaders.remove(leader);
    }

    fn watch(&mut self, leader: &BrokerName, now: Instant) -> &mut Watch {
        self.leaders.entry(leader.clone()).or_insert(Watch {
            heard: now,
            ended: false,
            lease_until: None,
        })
    }

    fn lost(w: &Watch, now: Instant, silence: Duration) -> bool {
        w.ended || now.saturating_duration_since(w.heard) > silence
    }

    /// The leaders whose channels to stand for at `now`: lost, and no
    /// lease granted to them still running.
    pub fn due(&self, now: Instant, silence: Duration) -> Vec<BrokerName> {
        self.leaders
            .iter()
            .filter(|(_, w)| Self::lost(w, now, silence))
            .filter(|(_, w)| w.lease_until.is_none_or(|u| u <= now))
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// When to look again: the earliest moment a leader may become due
    /// (its silence running out, or the lease a lost one holds ending).
    pub fn next_check(&self, silence: Duration) -> Option<Instant> {
        self.leaders
            .values()
            .map(|w| {
                let lost_at = if w.ended { w.heard } else { w.heard + silence };
                w.lease_until.map_or(lost_at, |u| lost_at.max(u))
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILENCE: Duration = Duration::from_millis(1500);
    const LEASE: Duration = Duration::from_millis(800);

    fn b(n: &str) -> BrokerName {
        n.into()
    }

    #[test]
    fn a_leader_heard_from_is_not_due() {
        let t0 = Instant::now();
        let mut v = Vigil::new();
        v.opened(&b("b1"), t0);
        v.granted(&b("b1"), t0 + LEASE, t0);
        v.heard(&b("b1"), t0 + Duration::from_millis(500));
        assert!(v.due(t0 + Duration::from_millis(1900), SILENCE).is_empty());
    }

    #[test]
    fn a_reset_stream_is_due_as_soon_as_the_lease_ends_not_after_the_silence() {
        let t0 = Instant::now();
        let mut v = Vigil::new();
        v.opened(&b("b1"), t0);
        v.granted(&b("b1"), t0 + LEASE, t0);
        v.ended(&b("b1"), t0 + Duration::from_millis(10));
        assert!(v.due(t0 + Duration::from_millis(500), SILENCE).is_empty());
        assert_eq!(v.next_check(SILENCE), Some(t0 + LEASE));
        assert_eq!(v.due(t0 + LEASE, SILENCE), vec![b("b1")]);
    }

    #[test]
    fn a_silent_leader_is_due_after_the_silence_and_the_lease() {
        let t0 = Instant::now();
        let mut v = Vigil::new();
        v.opened(&b("b1"), t0);
        v.granted(&b("b1"), t0 + LEASE, t0);
        assert!(v.due(t0 + SILENCE, SILENCE).is_empty());
        assert_eq!(v.next_check(SILENCE), Some(t0 + SILENCE));
        let later = t0 + SILENCE + Duration::from_millis(1);
        assert_eq!(v.due(later, SILENCE), vec![b("b1")]);
    }

    #[test]
    fn a_lease_is_never_cut_short_and_a_reopened_stream_is_watched_again() {
        let t0 = Instant::now();
        let mut v = Vigil::new();
        v.granted(&b("b1"), t0 + LEASE, t0);
        // An older grant arriving late does not shorten the lease.
        v.granted(&b("b1"), t0 + Duration::from_millis(100), t0);
        v.ended(&b("b1"), t0);
        assert!(v.due(t0 + Duration::from_millis(700), SILENCE).is_empty());
        v.opened(&b("b1"), t0 + Duration::from_millis(750));
        assert!(v.due(t0 + LEASE, SILENCE).is_empty());
        v.forget(&b("b1"));
        assert_eq!(v.next_check(SILENCE), None);
    }
}
