//! The run's counters, shared by every connection task and read by the
//! progress line and the summary. Plain relaxed atomics: each is a count
//! on its own, and the final figures are read after every task has ended.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::latency::Latency;

pub struct Tally {
    pub connected: AtomicUsize,
    pub connect_failed: AtomicUsize,
    pub publishers_connected: AtomicUsize,
    pub subscribed: AtomicUsize,
    pub subscribe_failed: AtomicUsize,
    /// Publications received by subscribers (every copy counts).
    pub delivered: AtomicU64,
    /// Deliveries whose sequence number was not above the last one that
    /// subscription saw: duplicates or reordering.
    pub order_violations: AtomicU64,
    /// Publications a subscription never received, added up when the
    /// subscriptions end (exact when there are no order violations).
    pub lost: AtomicU64,
    /// Presence events (`join`/`leave`) received.
    pub events: AtomicU64,
    /// `error` frames received, other than refused subscribes.
    pub errors: AtomicU64,
    /// Connections the server ended before the run did.
    pub closed_by_server: AtomicUsize,
    /// Publications written, per channel.
    pub published: Vec<AtomicU64>,
    /// Subscriptions in effect, per channel.
    pub subscribers: Vec<AtomicU32>,
    /// Delivery latency, microseconds.
    pub latency: Latency,
    /// How late publishers were against their schedule, microseconds.
    pub lag: Latency,
}

impl Tally {
    pub fn new(channels: usize) -> Self {
        Self {
            connected: AtomicUsize::new(0),
            connect_failed: AtomicUsize::new(0),
            publishers_connected: AtomicUsize::new(0),
            subscribed: AtomicUsize::new(0),
            subscribe_failed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            order_violations: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            events: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            closed_by_server: AtomicUsize::new(0),
            published: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            subscribers: (0..channels).map(|_| AtomicU32::new(0)).collect(),
            latency: Latency::default(),
            lag: Latency::default(),
        }
    }

    /// Publications written, over all channels.
    pub fn published_total(&self) -> u64 {
        self.published.iter().map(|p| p.load(Relaxed)).sum()
    }

    /// Deliveries owed for what has been published so far: each
    /// publication once to every subscription of its channel.
    pub fn expected(&self) -> u64 {
        self.published
            .iter()
            .zip(&self.subscribers)
            .map(|(p, s)| p.load(Relaxed) * u64::from(s.load(Relaxed)))
            .sum()
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn count(counter: &AtomicUsize) -> usize {
        counter.load(Relaxed)
    }

    pub fn bump(counter: &AtomicUsize) {
        counter.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_is_publications_times_subscribers_per_channel() {
        let t = Tally::new(3);
        t.published[0].store(10, Relaxed);
        t.published[2].store(5, Relaxed);
        t.subscribers[0].store(2, Relaxed);
        t.subscribers[1].store(7, Relaxed);
        t.subscribers[2].store(3, Relaxed);
        assert_eq!(t.published_total(), 15);
        assert_eq!(t.expected(), 35);
    }
}
