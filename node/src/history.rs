//! The publication log of one channel: at most `size` entries and
//! `max_bytes` bytes, none older than `ttl`. Entries hold the publication already encoded for clients, so
//! recovery replays bytes and never re-encodes.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use bytes::Bytes;

use switchboard_core::Publication;

use crate::memory_budget::HISTORY_ENTRY_OVERHEAD;

#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.frame.len() + HISTORY_ENTRY_OVERHEAD
    }

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
    /// Most bytes kept (frames plus a fixed overhead each); 0: no limit.
    max_bytes: usize,
    bytes: usize,
    entries: VecDeque<Entry>,
}

impl History {
    pub fn new(size: usize, ttl: Duration) -> Self {
        // Grow on demand: most channels never reach their limit.
        Self {
            size,
            ttl,
            max_bytes: 0,
            bytes: 0,
            entries: VecDeque::new(),
        }
    }

    /// The same log, also capped at `max_bytes` (0: no byte cap).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Bytes held: frames plus a fixed overhead per entry.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }

    /// Appends an entry, dropping the oldest ones beyond the entry and
    /// byte caps. A frame larger than the byte cap on its own empties the
    /// log: dropping only from the front keeps it contiguous, so recovery
    /// never claims a gap is complete.
    pub fn push(&mut self, offset: u64, at: Instant, frame: Bytes) {
        let limit = if self.max_bytes == 0 {
            usize::MAX
        } else {
            self.max_bytes
        };
        self.push_within(offset, at, frame, limit);
    }

    /// Appends an entry without holding more bytes than now (the memory
    /// budget is spent): older entries give way, and if they cannot make
    /// room the log is emptied instead.
    pub fn push_without_growth(&mut self, offset: u64, at: Instant, frame: Bytes) {
        let limit = match self.max_bytes {
            0 => self.bytes,
            max => self.bytes.min(max),
        };
        self.push_within(offset, at, frame, limit);
    }

    fn push_within(&mut self, offset: u64, at: Instant, frame: Bytes, limit: usize) {
        if !self.is_enabled() {
            return;
        }
        let entry = Entry { offset, at, frame };
        self.bytes += entry.bytes();
        self.entries.push_back(entry);
        while self.entries.len() > self.size || self.bytes > limit {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.bytes();
        }
    }

    /// Drops expired entries; returns whether any are left.
    pub fn trim(&mut self, now: Instant) -> bool {
        while let Some(front) = self.entries.front() {
            if now.saturating_duration_since(front.at) >= self.ttl {
                self.pop_front();
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
    fn bounded_by_bytes() {
        let t0 = Instant::now();
        let entry = 100 + HISTORY_ENTRY_OVERHEAD;
        let big = |i: u8| Bytes::from(vec![i; 100]);
        let mut h = History::new(100, Duration::from_secs(10)).with_max_bytes(3 * entry);
        for i in 1..=5 {
            h.push(u64::from(i), t0, big(i));
        }
        assert_eq!((h.len(), h.bytes(), h.oldest()), (3, 3 * entry, Some(3)));
        // One frame over the cap on its own: nothing is kept rather than
        // a log with a hole in it.
        h.push(6, t0, Bytes::from(vec![0; 4 * entry]));
        assert_eq!((h.len(), h.bytes()), (0, 0));
        h.push(7, t0, big(7));
        assert!(h.trim(t0 + Duration::from_secs(9)));
        assert!(!h.trim(t0 + Duration::from_secs(10)));
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn over_budget_pushes_never_grow_the_log() {
        let t0 = Instant::now();
        let mut h = History::new(100, Duration::from_secs(10));
        for i in 1..=3 {
            h.push(i, t0, frame(i));
        }
        let before = h.bytes();
        h.push_without_growth(4, t0, frame(4));
        assert_eq!((h.bytes(), h.oldest()), (before, Some(2)));
        // Larger than all that is held: the log empties.
        h.push_without_growth(5, t0, Bytes::from(vec![0; 4 * before]));
        assert_eq!((h.len(), h.bytes()), (0, 0));
        h.push_without_growth(6, t0, frame(6));
        assert!(h.is_empty());
    }

    #[test]
    fn disabled_keeps_nothing() {
        let mut h = History::new(0, Duration::from_secs(10));
        h.push(1, Instant::now(), frame(1));
        assert!(h.is_empty());
    }
}
