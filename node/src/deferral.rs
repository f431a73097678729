//! How long a broker refuses a replicated channel whose newer copy is held
//! elsewhere (sans-IO). The ring may name this broker the channel's owner
//! while it may not stand on the channel's latest term (its copy is of an
//! earlier one, or it holds none) and a data replica of that term is live:
//! serving its own copy would acknowledge publications at offsets already
//! given away, and starting the channel anew would end an epoch that
//! lives on. It refuses (the gateway asks again) while rings settle; past
//! [`Deferrals::WAIT`] it serves the channel as before, announced, so a
//! channel is never refused for good.
//!
//! The same wait bounds the refusal of a copy held here that must be
//! checked with a broker out of reach (after a partition's heal, with any
//! replication factor: `Handoff`'s verification); with replication, both
//! refusals share one `Deferrals`, so a channel waits 5 s in all.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use switchboard_core::ChannelName;

/// Refusals in progress, per channel: since when, and when last.
#[derive(Debug, Default)]
pub struct Deferrals {
    refused: HashMap<ChannelName, (Instant, Instant)>,
}

impl Deferrals {
    /// Long enough for gossip to settle after a heal (every member's stale
    /// declaration refuted) and for a gateway's call to be asked again.
    pub const WAIT: Duration = Duration::from_secs(5);

    /// How long a channel asked for no more is remembered: a channel asked
    /// for rarely is refused for [`Self::WAIT`] in all, not on every ask.
    pub const FORGET: Duration = Duration::from_secs(60);

    /// Whether `channel` is still to be refused at `now`: the first call
    /// starts the wait.
    pub fn refuse(&mut self, channel: &ChannelName, now: Instant) -> bool {
        self.refused
            .retain(|_, (_, last)| now.duration_since(*last) < Self::FORGET);
        let (since, last) = self.refused.entry(channel.clone()).or_insert((now, now));
        *last = now;
        now.duration_since(*since) < Self::WAIT
    }

    /// The channel is led here (or its copy is the newest after all): a
    /// later refusal waits afresh.
    pub fn settle(&mut self, channel: &ChannelName) {
        self.refused.remove(channel);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.refused.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_for_the_wait_then_serves() {
        let ch = ChannelName::new("chat:a").unwrap();
        let mut d = Deferrals::default();
        let t0 = Instant::now();
        assert!(d.refuse(&ch, t0));
        assert!(d.refuse(&ch, t0 + Deferrals::WAIT / 2));
        assert!(!d.refuse(&ch, t0 + Deferrals::WAIT));
        d.settle(&ch);
        assert!(d.refuse(&ch, t0 + Deferrals::WAIT));
    }

    #[test]
    fn refusals_asked_for_no_more_are_forgotten() {
        let (a, b) = (
            ChannelName::new("chat:a").unwrap(),
            ChannelName::new("chat:b").unwrap(),
        );
        let mut d = Deferrals::default();
        let t0 = Instant::now();
        d.refuse(&a, t0);
        // Asked again now and then: the wait counts from the first ask.
        assert!(!d.refuse(&a, t0 + Deferrals::FORGET / 2));
        d.refuse(&b, t0 + Deferrals::FORGET / 2 + Deferrals::FORGET);
        assert_eq!(d.len(), 1);
        // Long unasked: a new wait.
        assert!(d.refuse(&a, t0 + 3 * Deferrals::FORGET));
    }
}
