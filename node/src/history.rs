//! The publication log of one channel: at most `size` entries, none older
//! than `ttl`. Entries hold the publication already encoded for clients, so
//! recovery replays bytes and never re-encodes.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use bytes::Bytes;

use switchboard_core::Publication;

#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

impl Entry {
    fn publication(&self) -> Publication {
        Publication {
            offset: self.offset,
            frame: self.frame.clone(),
        }
    }
}

#[derive(Debug)]
pub struct History {
    size: usize,
    ttl: Duration,
    entries: VecDeque<Entry>,
}

impl History {
    pub fn new(size: usize, ttl: Duration) -> Self {
        // Grow on demand: most channels never reach their limit.
        Self {
            size,
            ttl,
            entries: VecDeque::new(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }

    pub fn push(&mut self, offset: u64, at: Instant, frame: Bytes) {
        if !self.is_enabled() {
            return;
        }
        if self.entries.len() == self.size {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry { offset, at, frame });
    }

    /// Drops expired entries; returns whether any are left.
    pub fn trim(&mut self, now: Instant) -> bool {
        while let Some(front) = self.entries.front() {
            if now.saturating_duration_since(front.at) >= self.ttl {
                self.entries.pop_front();
            } else {
                break;
            }
        }
        !self.entries.is_empty()
    }

    /// Every retained entry, oldest first: offset, when it was added, frame.
    pub fn entries(&self) -> impl Iterator<Item = (u64, Instant, &Bytes)> {
        self.entries.iter().map(|e| (e.offset, e.at, &e.frame))
    }

    /// The oldest retained offset.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.front().map(|e| e.offset)
    }

    /// When the newest entry expires: the channel must outlive it, or a
    /// reader could miss publications it could still have recovered.
    pub fn expires_at(&self) -> Option<Instant> {
        self.entries.back().map(|e| e.at + self.ttl)
    }

    /// Up to `limit` publications with offset `>= from`, oldest first.
    pub fn since(&self, from: u64, limit: usize) -> Vec<Publication> {
        let start = self.entries.partition_point(|e| e.offset < from);
        self.entries
            .range(start..)
            .take(limit)
            .map(Entry::publication)
            .collect()
    }

    /// The newest `limit` publications, newest first.
    pub fn latest(&self, limit: usize) -> Vec<Publication> {
        self.entries
            .iter()
            .rev()
            .take(limit)
            .map(Entry::publication)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> Bytes {
        Bytes::from(i.to_string())
    }

    fn publication(i: u64) -> Publication {
        Publication {
            offset: i,
            frame: frame(i),
        }
    }

    #[test]
    fn bounded_by_size_and_ttl() {
        let t0 = Instant::now();
        let mut h = History::new(3, Duration::from_secs(10));
        for i in 1..=5 {
            h.push(i, t0 + Duration::from_secs(i), frame(i));
        }
        assert_eq!(h.oldest(), Some(3));
        assert_eq!(h.since(4, 10), vec![publication(4), publication(5)]);
        assert_eq!(h.since(0, 2), vec![publication(3), publication(4)]);
        assert_eq!(h.latest(2), vec![publication(5), publication(4)]);
        assert!(h.trim(t0 + Duration::from_secs(14)));
        assert_eq!(h.oldest(), Some(5));
        assert!(!h.trim(t0 + Duration::from_secs(15)));
    }

    #[test]
    fn disabled_keeps_nothing() {
        let mut h = History::new(0, Duration::from_secs(10));
        h.push(1, Instant::now(), frame(1));
        assert!(h.is_empty());
    }
}
