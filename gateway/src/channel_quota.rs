//! How many distinct channels one connection may touch (subscribe to or
//! publish to) per interval: what stops a client from creating channels
//! at a broker faster than they expire (docs/security.md). Sans-IO: the
//! caller passes the time.
//!
//! A fixed window: the first touch of a channel in a window counts, more
//! touches of it in the same window are free. Channels are remembered by
//! a keyed hash, so the window holds at most `max` small numbers.

use std::{
    collections::HashSet,
    hash::BuildHasher,
    time::{Duration, Instant},
};

use switchboard_core::ChannelName;

use crate::error::RequestError;

#[derive(Debug)]
pub struct ChannelQuota {
    max: usize,
    interval: Duration,
    window_start: Instant,
    seen: HashSet<u64>,
    hasher: foldhash::fast::RandomState,
}

impl ChannelQuota {
    /// `max` distinct channels per `interval`; `max == 0` means no limit.
    pub fn new(max: usize, interval: Duration, now: Instant) -> Self {
        Self {
            max,
            interval,
            window_start: now,
            seen: HashSet::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Counts a touch of `channel`; false when it would be one distinct
    /// channel too many in this window.
    pub fn touch(&mut self, channel: &ChannelName, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        if now.saturating_duration_since(self.window_start) >= self.interval {
            self.window_start = now;
            self.seen.clear();
        }
        let key = self.hasher.hash_one(channel.as_str());
        if self.seen.contains(&key) {
            return true;
        }
        if self.seen.len() >= self.max {
            return false;
        }
        self.seen.insert(key);
        true
    }

    /// [`Self::touch`] as a request's answer: error 110 beyond the quota.
    pub fn admit(&mut self, channel: &ChannelName, now: Instant) -> Result<(), RequestError> {
        if self.touch(channel, now) {
            Ok(())
        } else {
            tracing::debug!(channel = %channel, "channel quota exceeded");
            Err(RequestError::RateLimited)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(i: usize) -> ChannelName {
        ChannelName::new(&format!("a:{i}")).unwrap()
    }

    #[test]
    fn distinct_channels_per_window() {
        let t0 = Instant::now();
        let mut q = ChannelQuota::new(3, Duration::from_secs(10), t0);
        assert!((0..3).all(|i| q.touch(&ch(i), t0)));
        assert!(!q.touch(&ch(3), t0), "a fourth channel");
        assert!(q.touch(&ch(1), t0), "one already counted is free");
        let later = t0 + Duration::from_secs(10);
        assert!(q.touch(&ch(3), later), "a new window");
        assert!((4..6).all(|i| q.touch(&ch(i), later)));
        assert!(!q.touch(&ch(6), later));
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut q = ChannelQuota::new(0, Duration::from_secs(10), t0);
        assert!((0..1000).all(|i| q.touch(&ch(i), t0)));
    }
}
