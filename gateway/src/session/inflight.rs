//! The order of one connection's requests, without IO: one lane per
//! channel. A channel's requests run one at a time in the order they were
//! read (so that publishes to one channel are applied in the order sent,
//! and a subscribe is settled before the publish behind it is checked),
//! while requests on different channels run side by side: a slow or dead
//! owner holds up only its own channels.
//!
//! A lane also holds the deliveries of its channel that arrive while a
//! request runs: they go out after its reply, so that a publisher sees the
//! reply before its own publication, and a subscriber the subscribe reply
//! before the first live message (which it may then drop as covered).
//!
//! Both are bounded: `limit` requests read and not answered (running or
//! waiting), beyond which the connection stops reading; and `hold_limit`
//! held deliveries, beyond which the connection is as slow as one whose
//! outbound queue overflows.

use std::collections::{HashMap, VecDeque};

use switchboard_core::ChannelName;

/// What a finished request leaves for its channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Finished<T, H> {
    /// The next request of the channel, to start now (the channel stays busy).
    pub(super) next: Option<T>,
    /// Deliveries held while the request ran, oldest first.
    pub(super) held: Vec<H>,
}

/// The held deliveries went over `hold_limit`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HoldOverflow;

struct Lane<T, H> {
    waiting: VecDeque<T>,
    held: Vec<H>,
}

pub(super) struct Lanes<T, H> {
    /// Only busy channels have a lane: an idle connection holds none.
    lanes: HashMap<ChannelName, Lane<T, H>, foldhash::fast::RandomState>,
    /// Requests running or waiting.
    open: usize,
    held: usize,
    limit: usize,
    hold_limit: usize,
}

impl<T, H> Lanes<T, H> {
    pub(super) fn new(limit: usize, hold_limit: usize) -> Self {
        Self {
            lanes: HashMap::default(),
            open: 0,
            held: 0,
            limit: limit.max(1),
            hold_limit,
        }
    }

    /// Whether another request may be read.
    pub(super) fn has_room(&self) -> bool {
        self.open < self.limit
    }

    /// Requests running or waiting.
    pub(super) fn open(&self) -> usize {
        self.open
    }

    pub(super) fn is_busy(&self, channel: &ChannelName) -> bool {
        self.lanes.contains_key(channel)
    }

    /// Takes a request for `channel`: true if the channel was free and the
    /// caller starts it now; otherwise `wait()` is queued behind the one
    /// running. The caller reads no more while [`Self::has_room`] is
    /// false, so this never refuses.
    pub(super) fn admit(&mut self, channel: &ChannelName, wait: impl FnOnce() -> T) -> bool {
        self.open += 1;
        match self.lanes.get_mut(channel) {
            Some(lane) => {
                lane.waiting.push_back(wait());
                false
            }
            None => {
                self.lanes.insert(
                    channel.clone(),
                    Lane {
                        waiting: VecDeque::new(),
                        held: Vec::new(),
                    },
                );
                true
            }
        }
    }

    /// The running request of `channel` is answered.
    pub(super) fn finish(&mut self, channel: &ChannelName) -> Finished<T, H> {
        let Some(lane) = self.lanes.get_mut(channel) else {
            return Finished {
                next: None,
                held: Vec::new(),
            };
        };
        self.open = self.open.saturating_sub(1);
        let held = std::mem::take(&mut lane.held);
        self.held -= held.len();
        let next = lane.waiting.pop_front();
        if next.is_none() {
            self.lanes.remove(channel);
        }
        Finished { next, held }
    }

    /// Keeps a delivery for `channel` until its running request is
    /// answered; gives it back if the channel is not busy.
    pub(super) fn hold(
        &mut self,
        channel: &ChannelName,
        delivery: H,
    ) -> Result<Option<H>, HoldOverflow> {
        let Some(lane) = self.lanes.get_mut(channel) else {
            return Ok(Some(delivery));
        };
        if self.held >= self.hold_limit {
            return Err(HoldOverflow);
        }
        self.held += 1;
        lane.held.push(delivery);
        Ok(None)
    }

    /// Forgets every waiting request and held delivery (the connection is
    /// closing); returns how many requests were still running.
    pub(super) fn abandon(&mut self) -> usize {
        let running = self.lanes.len();
        self.lanes.clear();
        self.open = 0;
        self.held = 0;
        running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn channels_run_side_by_side_and_one_channel_in_order() {
        let mut lanes: Lanes<u32, u32> = Lanes::new(8, 8);
        let (a, b) = (ch("a"), ch("b"));
        assert!(lanes.admit(&a, || 1), "a was free");
        assert!(lanes.admit(&b, || 2), "b was free");
        assert!(!lanes.admit(&a, || 3), "queued behind 1");
        assert!(!lanes.admit(&a, || 4), "queued behind 3");
        assert_eq!(lanes.open(), 4);
        // b's answer frees b only.
        let done = lanes.finish(&b);
        assert_eq!(done.next, None);
        assert!(!lanes.is_busy(&b) && lanes.is_busy(&a));
        // a's requests start one after the other, in the order read.
        assert_eq!(lanes.finish(&a).next, Some(3));
        assert_eq!(lanes.finish(&a).next, Some(4));
        assert_eq!(lanes.finish(&a).next, None);
        assert!(!lanes.is_busy(&a));
        assert_eq!(lanes.open(), 0);
    }

    #[test]
    fn a_stuck_channel_fills_the_connection_only_up_to_the_limit() {
        let mut lanes: Lanes<u32, u32> = Lanes::new(3, 8);
        let (stuck, live) = (ch("stuck"), ch("live"));
        lanes.admit(&stuck, || 1);
        lanes.admit(&stuck, || 2);
        assert!(lanes.has_room());
        assert!(lanes.admit(&live, || 3));
        assert!(!lanes.has_room(), "three open requests: stop reading");
        lanes.finish(&live);
        assert!(lanes.has_room(), "the live channel's answer makes room");
    }

    #[test]
    fn deliveries_wait_behind_a_running_request_of_their_channel_only() {
        let mut lanes: Lanes<u32, &str> = Lanes::new(8, 2);
        let (a, b) = (ch("a"), ch("b"));
        lanes.admit(&a, || 1);
        lanes.admit(&a, || 2);
        assert_eq!(lanes.hold(&b, "b1"), Ok(Some("b1")), "b is not busy");
        assert_eq!(lanes.hold(&a, "a1"), Ok(None));
        assert_eq!(lanes.hold(&a, "a2"), Ok(None));
        assert_eq!(lanes.hold(&a, "a3"), Err(HoldOverflow));
        // The first answer releases what arrived while it ran, in order;
        // the next request holds afresh.
        let done = lanes.finish(&a);
        assert_eq!((done.next, done.held), (Some(2), vec!["a1", "a2"]));
        assert_eq!(lanes.hold(&a, "a4"), Ok(None));
        let done = lanes.finish(&a);
        assert_eq!((done.next, done.held), (None, vec!["a4"]));
        assert_eq!(lanes.hold(&a, "a5"), Ok(Some("a5")));
    }

    #[test]
    fn finishing_an_idle_channel_changes_nothing() {
        let mut lanes: Lanes<u32, u32> = Lanes::new(1, 1);
        let done = lanes.finish(&ch("a"));
        assert_eq!((done.next, done.held.len(), lanes.open()), (None, 0, 0));
    }

    #[test]
    fn abandon_counts_the_running_requests() {
        let mut lanes: Lanes<u32, u32> = Lanes::new(8, 8);
        lanes.admit(&ch("a"), || 1);
        lanes.admit(&ch("a"), || 2);
        lanes.admit(&ch("b"), || 3);
        assert_eq!(lanes.abandon(), 2);
        assert!(lanes.has_room() && !lanes.is_busy(&ch("a")));
    }
}
