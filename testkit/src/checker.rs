//! The per-channel continuity checker for fault scenarios, sans-IO: it is
//! fed, in the order they happened, what the server acknowledged to
//! publishers and what every subscriber saw, and counts what broke the
//! promises of docs/protocol.md §6: acknowledged publications that never
//! arrived without an announced reset, duplicates, reorders, offset jumps
//! without an announcement, resets to an epoch the subscriber had already
//! left, and how often continuity was announced lost (`resubscribed`,
//! `recovered: false`).
//!
//! Publications are told apart by an id the publisher puts in the payload,
//! rising per channel (one publisher per channel, one publication in
//! flight), so that a publication applied twice, or replayed from an ended
//! epoch, shows as the same id delivered twice whatever its position.
//!
//! Time is the order of [`Checker::feed`] calls: an acknowledgement fed
//! after a subscription started is one the subscriber must receive, unless
//! a later reset announced its loss.

use std::collections::{BTreeMap, HashSet};

/// A position in a channel: `offset` within `epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

impl Position {
    pub fn new(epoch: &str, offset: u64) -> Self {
        Self {
            epoch: epoch.to_owned(),
            offset,
        }
    }
}

/// One publication as a subscriber received it: the payload's id and the
/// position the server gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: u64,
    pub position: Position,
}

/// The `since` part of a subscribe reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub recovered: bool,
    /// The reply's `publications`, oldest first.
    pub publications: Vec<Delivery>,
}

/// What happened, as the checker is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The server acknowledged publication `id` at `position`.
    Acknowledged {
        channel: String,
        id: u64,
        position: Position,
    },
    /// A subscribe reply reached `subscriber`; `recovery` when it sent `since`.
    Subscribed {
        subscriber: String,
        channel: String,
        position: Position,
        recovery: Option<Recovery>,
    },
    /// A `message` frame.
    Delivered {
        subscriber: String,
        channel: String,
        delivery: Delivery,
    },
    /// A `resubscribed` frame.
    Resubscribed {
        subscriber: String,
        channel: String,
        position: Position,
    },
    /// An `error` frame about the channel (a failed subscribe, say).
    Error {
        subscriber: String,
        channel: String,
        code: u16,
    },
}

impl Event {
    /// The channel the event is about.
    pub fn channel(&self) -> &str {
        match self {
            Event::Acknowledged { channel, .. }
            | Event::Subscribed { channel, .. }
            | Event::Delivered { channel, .. }
            | Event::Resubscribed { channel, .. }
            | Event::Error { channel, .. } => channel,
        }
    }
}

/// What the checker counted, for one channel or in total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct acknowledged publication ids.
    pub acknowledged: usize,
    /// Deliveries, recovered publications included.
    pub delivered: usize,
    /// Acknowledged publications a subscriber never received, with no
    /// reset announcing their loss: the silent kind, never acceptable.
    pub missing: usize,
    /// Acknowledged publications a subscriber never received, covered by a
    /// `resubscribed` or `recovered: false` it was sent.
    pub lost_announced: usize,
    /// Deliveries of an id the subscriber had already received.
    pub duplicates: usize,
    /// Deliveries of a new id below one already received, or at an offset
    /// at or below the subscriber's position in the same epoch.
    pub reorders: usize,
    /// Offset jumps within an epoch, or an epoch change, with no reset
    /// announced (counted once per jump).
    pub silent_gaps: usize,
    /// Resets (or `recovered: false` replies) to an epoch the subscriber
    /// had moved away from: an ended epoch brought back.
    pub resets_to_ended_epoch: usize,
    /// Resets to the epoch the subscriber is in, at a lower offset than
    /// it has: what it already had comes again.
    pub rewinds: usize,
    pub resubscribed: usize,
    pub recovered_false: usize,
    pub recovered_true: usize,
    /// `error` frames, by code.
    pub errors: BTreeMap<u16, usize>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.acknowledged += o.acknowledged;
        self.delivered += o.delivered;
        self.missing += o.missing;
        self.lost_announced += o.lost_announced;
        self.duplicates += o.duplicates;
        self.reorders += o.reorders;
        self.silent_gaps += o.silent_gaps;
        self.resets_to_ended_epoch += o.resets_to_ended_epoch;
        self.rewinds += o.rewinds;
        self.resubscribed += o.resubscribed;
        self.recovered_false += o.recovered_false;
        self.recovered_true += o.recovered_true;
        for (code, n) in &o.errors {
            *self.errors.entry(*code).or_default() += n;
        }
    }

    /// Nothing broke silently: no missing publication, duplicate, reorder,
    /// silent gap or ended epoch brought back. What today's code promises
    /// under every fault (docs/operations.md).
    pub fn nothing_silent(&self) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.reorders == 0
            && self.silent_gaps == 0
            && self.resets_to_ended_epoch == 0
            && self.rewinds == 0
    }

    /// [`Counts::nothing_silent`], and continuity was never even announced
    /// lost: no `resubscribed`, no `recovered: false`, nothing lost. What
    /// issue 13 demands of every fault a replica survives.
    pub fn seamless(&self) -> bool {
        self.nothing_silent()
            && self.lost_announced == 0
            && self.resubscribed == 0
            && self.recovered_false == 0
    }
}

/// The checker's verdict: counts per channel and in total.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub channels: BTreeMap<String, Counts>,
    pub total: Counts,
}

/// A reset a subscriber was told of: where it stood, where it went, and
/// when (in feed order).
#[derive(Clone, Debug)]
struct Reset {
    at: usize,
    from: Option<Position>,
    to: Position,
}

impl Reset {
    /// Whether this reset announced the loss of an acknowledgement fed at
    /// `at` for `pos`: it came before the reset, and lies beyond where the
    /// subscriber stood (or is one the reset's target skipped over).
    fn covers(&self, at: usize, pos: &Position) -> bool {
        if at > self.at {
            return false;
        }
        let beyond_from = match &self.from {
            Some(from) if from.epoch == pos.epoch => pos.offset > from.offset,
            _ => true,
        };
        let before_to = pos.epoch != self.to.epoch || pos.offset <= self.to.offset;
        beyond_from && before_to
    }
}

/// One subscriber's view of one channel.
#[derive(Debug, Default)]
struct Stream {
    /// When (feed order) and where the first subscription took effect.
    start: Option<(usize, Position)>,
    current: Option<Position>,
    seen: HashSet<u64>,
    max_id: Option<u64>,
    resets: Vec<Reset>,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Channel {
    /// Every acknowledgement: (feed order, id, position).
    acks: Vec<(usize, u64, Position)>,
    streams: BTreeMap<String, Stream>,
    errors: BTreeMap<u16, usize>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Checker {
    now: usize,
    channels: BTreeMap<String, Channel>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next event, in the order things happened.
    pub fn feed(&mut self, event: Event) {
        self.now += 1;
        let now = self.now;
        match event {
            Event::Acknowledged {
                channel,
                id,
                position,
            } => self.channel(&channel).acks.push((now, id, position)),
            Event::Subscribed {
                subscriber,
                channel,
                position,
                recovery,
            } => self
                .stream(&channel, &subscriber)
                .subscribed(now, position, recovery),
            Event::Delivered {
                subscriber,
                channel,
                delivery,
            } => self.stream(&channel, &subscriber).deliver(&delivery),
            Event::Resubscribed {
                subscriber,
                channel,
                position,
            } => {
                let stream = self.stream(&channel, &subscriber);
                stream.counts.resubscribed += 1;
                stream.reset(now, position);
            }
            Event::Error { channel, code, .. } => {
                *self.channel(&channel).errors.entry(code).or_default() += 1;
            }
        }
    }

    fn channel(&mut self, name: &str) -> &mut Channel {
        self.channels.entry(name.to_owned()).or_default()
    }

    fn stream(&mut self, channel: &str, subscriber: &str) -> &mut Stream {
        self.channel(channel)
            .streams
            .entry(subscriber.to_owned())
            .or_default()
    }

    /// The counts so far.
    pub fn report(&self) -> Report {
        let mut report = Report::default();
        for (name, channel) in &self.channels {
            let counts = channel.counts();
            report.total.add(&counts);
            report.channels.insert(name.clone(), counts);
        }
        report
    }
}

impl Channel {
    fn counts(&self) -> Counts {
        let mut counts = Counts {
            acknowledged: self
                .acks
                .iter()
                .map(|(_, id, _)| *id)
                .collect::<HashSet<_>>()
                .len(),
            errors: self.errors.clone(),
            ..Counts::default()
        };
        for stream in self.streams.values() {
            counts.add(&stream.counts);
            let Some((start_at, start)) = &stream.start else {
                continue;
            };
            let mut judged = HashSet::new();
            for (at, id, pos) in &self.acks {
                let after_start = if pos.epoch == start.epoch {
                    pos.offset > start.offset
                } else {
                    at > start_at
                };
                if !after_start || stream.seen.contains(id) || !judged.insert(*id) {
                    continue;
                }
                if stream.resets.iter().any(|r| r.covers(*at, pos)) {
                    counts.lost_announced += 1;
                } else {
                    counts.missing += 1;
                }
            }
        }
        counts
    }
}

impl Stream {
    fn subscribed(&mut self, now: usize, position: Position, recovery: Option<Recovery>) {
        let Some(recovery) = recovery else {
            if self.start.is_none() {
                self.start = Some((now, position.clone()));
            }
            self.current = Some(position);
            return;
        };
        if recovery.recovered {
            self.counts.recovered_true += 1;
            let continues = self
                .current
                .as_ref()
                .is_none_or(|c| c.epoch == position.epoch);
            if !continues {
                // `recovered: true` into another epoch: a jump nobody announced.
                self.counts.silent_gaps += 1;
            }
        } else {
            self.counts.recovered_false += 1;
            // The reply's publications are the newest retained: the reset
            // lands just before the first of them.
            let to = match recovery.publications.first() {
                Some(first) => Position {
                    epoch: first.position.epoch.clone(),
                    offset: first.position.offset.saturating_sub(1),
                },
                None => position.clone(),
            };
            self.reset(now, to);
        }
        for delivery in &recovery.publications {
            self.deliver(delivery);
        }
        if self.start.is_none() {
            self.start = Some((now, position.clone()));
        }
        if self.current.is_none() {
            self.current = Some(position);
        }
    }

    fn reset(&mut self, now: usize, to: Position) {
        let from = self.current.take();
        if let Some(from) = &from
            && from.epoch == to.epoch
            && to.offset < from.offset
        {
            self.counts.rewinds += 1;
        }
        let ended = self.resets.iter().any(|r| {
            r.from
                .as_ref()
                .is_some_and(|f| f.epoch == to.epoch && f.epoch != r.to.epoch)
        });
        if ended {
            self.counts.resets_to_ended_epoch += 1;
        }
        self.resets.push(Reset {
            at: now,
            from,
            to: to.clone(),
        });
        self.current = Some(to);
    }

    fn deliver(&mut self, delivery: &Delivery) {
        self.counts.delivered += 1;
        let duplicate = !self.seen.insert(delivery.id);
        let below = self.max_id.is_some_and(|max| delivery.id < max);
        if duplicate {
            self.counts.duplicates += 1;
        } else if below {
            self.counts.reorders += 1;
        }
        let pos = &delivery.position;
        match &mut self.current {
            Some(cur) if cur.epoch == pos.epoch => {
                if pos.offset > cur.offset + 1 {
                    self.counts.silent_gaps += 1;
                } else if pos.offset <= cur.offset && !duplicate && !below {
                    self.counts.reorders += 1;
                }
                cur.offset = cur.offset.max(pos.offset);
            }
            Some(cur) => {
                self.counts.silent_gaps += 1;
                *cur = pos.clone();
            }
            None => self.current = Some(pos.clone()),
        }
        self.max_id = self.max_id.max(Some(delivery.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: &str, offset: u64) -> Position {
        Position::new(epoch, offset)
    }

    fn ack(id: u64, epoch: &str, offset: u64) -> Event {
        Event::Acknowledged {
            channel: "c".into(),
            id,
            position: pos(epoch, offset),
        }
    }

    fn sub(epoch: &str, offset: u64) -> Event {
        Event::Subscribed {
            subscriber: "s".into(),
            channel: "c".into(),
            position: pos(epoch, offset),
            recovery: None,
        }
    }

    fn msg(id: u64, epoch: &str, offset: u64) -> Event {
        Event::Delivered {
            subscriber: "s".into(),
            channel: "c".into(),
            delivery: Delivery {
                id,
                position: pos(epoch, offset),
            },
        }
    }

    fn resub(epoch: &str, offset: u64) -> Event {
        Event::Resubscribed {
            subscriber: "s".into(),
            channel: "c".into(),
            position: pos(epoch, offset),
        }
    }

    fn since(epoch: &str, offset: u64, recovered: bool, publications: &[(u64, u64)]) -> Event {
        Event::Subscribed {
            subscriber: "s".into(),
            channel: "c".into(),
            position: pos(epoch, offset),
            recovery: Some(Recovery {
                recovered,
                publications: publications
                    .iter()
                    .map(|&(id, offset)| Delivery {
                        id,
                        position: pos(epoch, offset),
                    })
                    .collect(),
            }),
        }
    }

    fn run(events: Vec<Event>) -> Counts {
        let mut checker = Checker::new();
        for e in events {
            checker.feed(e);
        }
        let report = checker.report();
        assert_eq!(report.channels["c"], report.total);
        report.total
    }

    /// Acknowledged and delivered, each once, in order, at each offset.
    fn steady(epoch: &str, ids: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        ids.flat_map(|i| [ack(i, epoch, i), msg(i, epoch, i)])
            .collect()
    }

    #[test]
    fn an_unbroken_run_counts_nothing() {
        let mut events = vec![sub("e1", 0)];
        events.extend(steady("e1", 1..=5));
        let c = run(events);
        assert!(c.seamless(), "{c:?}");
        assert_eq!((c.acknowledged, c.delivered), (5, 5));
    }

    #[test]
    fn an_acknowledged_publication_never_delivered_is_missing() {
        let c = run(vec![
            sub("e1", 0),
            ack(1, "e1", 1),
            ack(2, "e1", 2),
            msg(1, "e1", 1),
        ]);
        assert_eq!((c.missing, c.lost_announced), (1, 0));
        assert!(!c.nothing_silent());
    }

    #[test]
    fn what_was_acknowledged_before_the_subscription_is_not_expected() {
        let c = run(vec![
            ack(1, "e1", 1),
            sub("e1", 1),
            ack(2, "e1", 2),
            msg(2, "e1", 2),
        ]);
        assert!(c.seamless(), "{c:?}");
    }

    #[test]
    fn a_loss_covered_by_resubscribed_is_announced_not_missing() {
        let mut events = vec![sub("e1", 0), ack(1, "e1", 1), msg(1, "e1", 1)];
        // Acknowledged by the owner that then died, never delivered.
        events.push(ack(2, "e1", 2));
        events.push(resub("e2", 0));
        events.extend([ack(3, "e2", 1), msg(3, "e2", 1)]);
        let c = run(events);
        assert_eq!((c.missing, c.lost_announced, c.resubscribed), (0, 1, 1));
        assert!(c.nothing_silent() && !c.seamless(), "{c:?}");
    }

    #[test]
    fn a_loss_after_the_reset_is_not_covered_by_it() {
        let c = run(vec![
            sub("e1", 0),
            resub("e2", 0),
            ack(1, "e2", 1),
            ack(2, "e2", 2),
            msg(2, "e2", 2),
        ]);
        assert_eq!((c.missing, c.lost_announced, c.silent_gaps), (1, 0, 1));
    }

    #[test]
    fn an_id_delivered_twice_is_a_duplicate() {
        let c = run(vec![
            sub("e1", 0),
            ack(1, "e1", 1),
            msg(1, "e1", 1),
            // Applied twice (a retry the owner did not recognise).
            ack(1, "e1", 2),
            msg(1, "e1", 2),
        ]);
        assert_eq!((c.duplicates, c.reorders, c.silent_gaps), (1, 0, 0));
        assert_eq!(c.acknowledged, 1);
    }

    #[test]
    fn a_lower_id_after_a_higher_one_is_a_reorder() {
        let c = run(vec![
            sub("e1", 0),
            ack(1, "e1", 1),
            ack(2, "e1", 2),
            msg(2, "e1", 2),
            msg(1, "e1", 1),
        ]);
        // Offset 2 straight after 0 is also a jump nobody announced.
        assert_eq!(
            (c.reorders, c.silent_gaps, c.missing, c.duplicates),
            (1, 1, 0, 0)
        );
    }

    #[test]
    fn an_offset_at_or_below_the_position_with_a_new_id_is_a_reorder() {
        let c = run(vec![sub("e1", 0), msg(1, "e1", 1), msg(2, "e1", 1)]);
        assert_eq!((c.reorders, c.duplicates), (1, 0));
    }

    #[test]
    fn an_offset_jump_is_a_silent_gap() {
        let c = run(vec![sub("e1", 0), msg(1, "e1", 1), msg(3, "e1", 3)]);
        assert_eq!((c.silent_gaps, c.missing), (1, 0));
    }

    #[test]
    fn an_epoch_change_without_a_reset_is_a_silent_gap() {
        let c = run(vec![sub("e1", 0), msg(1, "e1", 1), msg(2, "e2", 1)]);
        assert_eq!(c.silent_gaps, 1);
        assert_eq!(c.resubscribed, 0);
    }

    #[test]
    fn a_reset_back_to_an_ended_epoch_is_counted_and_its_replay_is_duplicated() {
        let mut events = vec![sub("e1", 0)];
        events.extend(steady("e1", 1..=3));
        events.push(resub("e2", 0));
        events.extend([ack(4, "e2", 1), msg(4, "e2", 1)]);
        // The frozen ex-owner comes back with e1 and replays it.
        events.push(resub("e1", 0));
        events.extend([msg(1, "e1", 1), msg(2, "e1", 2), msg(3, "e1", 3)]);
        let c = run(events);
        assert_eq!(c.resets_to_ended_epoch, 1);
        assert_eq!(c.resubscribed, 2);
        assert_eq!(c.duplicates, 3);
        assert_eq!((c.silent_gaps, c.missing), (0, 0));
    }

    #[test]
    fn a_reset_to_a_lower_offset_of_the_same_epoch_is_a_rewind() {
        let mut events = vec![sub("e1", 0)];
        events.extend(steady("e1", 1..=3));
        events.push(resub("e1", 1));
        events.extend([msg(2, "e1", 2), msg(3, "e1", 3)]);
        let c = run(events);
        assert_eq!(
            (c.rewinds, c.duplicates, c.resets_to_ended_epoch),
            (1, 2, 0)
        );
        assert!(!c.nothing_silent());
    }

    #[test]
    fn recovered_true_fills_what_was_missed_while_away() {
        let mut events = vec![sub("e1", 0)];
        events.extend(steady("e1", 1..=2));
        // Away: 3 and 4 acknowledged, not delivered live.
        events.extend([ack(3, "e1", 3), ack(4, "e1", 4)]);
        events.push(since("e1", 4, true, &[(3, 3), (4, 4)]));
        events.extend(steady("e1", 5..=6));
        let c = run(events);
        assert!(c.seamless(), "{c:?}");
        assert_eq!((c.recovered_true, c.delivered), (1, 6));
    }

    #[test]
    fn recovered_false_is_counted_and_announces_the_loss() {
        let mut events = vec![sub("e1", 0)];
        events.extend(steady("e1", 1..=2));
        events.extend([ack(3, "e1", 3), ack(4, "e2", 1)]);
        // The owner died while the client was away: a new epoch.
        events.push(since("e2", 1, false, &[(4, 1)]));
        events.extend([ack(5, "e2", 2), msg(5, "e2", 2)]);
        let c = run(events);
        assert_eq!((c.recovered_false, c.lost_announced, c.missing), (1, 1, 0));
        assert!(c.nothing_silent() && !c.seamless(), "{c:?}");
    }

    #[test]
    fn recovered_true_into_another_epoch_is_a_silent_gap() {
        let c = run(vec![sub("e1", 0), since("e2", 0, true, &[])]);
        assert_eq!(c.silent_gaps, 1);
    }

    #[test]
    fn errors_are_counted_by_code_and_summed_over_channels() {
        let mut checker = Checker::new();
        for (channel, code) in [("a", 100), ("a", 100), ("b", 100), ("b", 115)] {
            checker.feed(Event::Error {
                subscriber: "s".into(),
                channel: channel.into(),
                code,
            });
        }
        let r = checker.report();
        assert_eq!(r.channels["a"].errors, BTreeMap::from([(100, 2)]));
        assert_eq!(r.total.errors, BTreeMap::from([(100, 3), (115, 1)]));
    }

    #[test]
    fn subscribers_are_judged_apart() {
        let mut checker = Checker::new();
        for s in ["s", "t"] {
            checker.feed(Event::Subscribed {
                subscriber: s.into(),
                channel: "c".into(),
                position: pos("e1", 0),
                recovery: None,
            });
        }
        checker.feed(ack(1, "e1", 1));
        checker.feed(msg(1, "e1", 1));
        let c = checker.report().total;
        assert_eq!((c.missing, c.delivered, c.acknowledged), (1, 1, 1));
    }
}
