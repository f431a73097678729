//! The subscription table: this gateway's subscription to each channel and
//! the order promise kept on it, without IO. The router's async code feeds
//! it what arrives (live deliveries, subscribe replies) and does what it
//! answers; every decision about what local clients receive is made here.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use switchboard_core::{
    BrokerName, ChannelName, ClientInfo, Control, Delivery, DeliveryKind, Position, Publication,
    SubscribeReply, frame::push as frame,
};

/// How long a resubscription keeps asking an owner whose copy of the
/// clients' epoch is behind what they were given before it takes that
/// copy's reset: long enough for a thawed or healed owner to take the newer
/// copy (docs/operations.md, "Failure behaviour").
pub(super) const BEHIND_WAIT: Duration = Duration::from_secs(3);

/// This gateway's subscription to one channel.
pub(super) struct Subscription {
    /// The broker the subscription was last placed at.
    pub(super) owner: BrokerName,
    /// The broker a placement in flight is subscribing at.
    pub(super) placing: Option<BrokerName>,
    /// Whether `owner` is known to hold this gateway's subscription (and its
    /// presence entries). Cleared when its stream was lost; the reconciler
    /// places the subscription again.
    pub(super) placed: bool,
    /// Bumped whenever the subscription must be placed again; a placement
    /// that started before a bump does not count as done.
    pub(super) unplaced: u64,
    /// Last position delivered to local clients.
    pub(super) last: Option<Position>,
    /// The newest replication term heard in `last`'s epoch (from a
    /// subscribe reply or a delivery passed on): a copy of an older term is
    /// a stale one, fenced (docs/replication.md, "Gateways").
    term: u64,
    /// Clients of this gateway in the channel's presence.
    pub(super) clients: HashMap<String, ClientInfo>,
    /// While (re)subscribing, live deliveries wait here so that recovered
    /// and live publications reach clients in offset order.
    pending: Option<Vec<Delivery>>,
    /// Since when the owner's replies have been behind (see
    /// [`Self::puts_off`]).
    behind_since: Option<Instant>,
}

/// What to do with one live delivery.
#[derive(Debug)]
pub(super) enum Live {
    /// Pass it to local clients.
    Deliver(Delivery),
    /// A publication at or before the last delivered offset: already
    /// delivered (a reordered or repeated copy, e.g. from the previous
    /// owner while a subscription moves). Dropped.
    Duplicate,
    /// Held until the pending (re)subscription settles.
    Held,
    /// From a copy of an older term than this gateway has heard in the
    /// epoch: a frozen, cut-off or outdated ex-owner's. Dropped; with
    /// `resubscribe`, the subscription is placed at that copy and must be
    /// placed again (never a silent gap: the reply settles it).
    Stale { resubscribe: bool },
    /// Subscribe again from where clients are: the owner replaced the
    /// channel's state (so that they hear of the new epoch), or a
    /// publication came past the next expected offset (a gap, held until
    /// the resubscription fills it in).
    Resubscribe,
}

impl Subscription {
    pub(super) fn new(owner: BrokerName) -> Self {
        Self {
            owner,
            placing: None,
            placed: false,
            unplaced: 0,
            last: None,
            term: 0,
            clients: HashMap::new(),
            pending: None,
            behind_since: None,
        }
    }

    /// Whether a resubscription's `reply` is put off, to be asked for
    /// again: the owner's copy of the epoch clients are in is behind what
    /// they were given from `since` (a stale copy: an owner that thawed or
    /// healed and has not taken the newer copy yet). Taken as it is after
    /// [`BEHIND_WAIT`]: then the owner lost those publications, and its
    /// reset is the truth.
    pub(super) fn puts_off(
        &mut self,
        since: Option<&Position>,
        reply: &SubscribeReply,
        now: Instant,
    ) -> bool {
        let behind = since.is_some_and(|since| {
            reply.position.epoch == since.epoch
                && ((reply.recovered != Some(true) && reply.position.offset < since.offset)
                    || reply.term < self.term)
        });
        if !behind {
            self.behind_since = None;
            return false;
        }
        let first = *self.behind_since.get_or_insert(now);
        if now.duration_since(first) >= BEHIND_WAIT {
            self.behind_since = None;
            return false;
        }
        true
    }

    /// Whether live deliveries from `broker` are this subscription's: from
    /// where it is placed, or is being placed. Any other broker's stream
    /// may carry the channel too (an owner it moved away from that does
    /// not know yet, or a new owner that a client's subscribe through this
    /// gateway reached before this gateway's own placement did), and what
    /// it sends is not in this subscription's order: dropped, and what was
    /// in it arrives with the placement there, from the owner's history.
    pub(super) fn accepts(&self, broker: &BrokerName) -> bool {
        *broker == self.owner || self.placing.as_ref() == Some(broker)
    }

    /// Whether a (re)subscription is in flight.
    pub(super) fn is_settling(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the first subscribe reply has not settled yet.
    pub(super) fn is_first(&self) -> bool {
        self.last.is_none()
    }

    /// The subscription must be placed again (stream lost, state replaced).
    pub(super) fn unplace(&mut self) {
        self.placed = false;
        self.unplaced += 1;
    }

    /// A (re)subscription starts: live deliveries wait for its reply.
    pub(super) fn hold(&mut self) {
        self.pending.get_or_insert_with(Vec::new);
    }

    /// The (re)subscription failed: what waited is handed back, to be fed
    /// again through [`Self::on_live`].
    pub(super) fn release(&mut self) -> Vec<Delivery> {
        self.pending.take().unwrap_or_default()
    }

    /// Decides one live delivery from a broker's stream.
    pub(super) fn on_live(&mut self, d: Delivery) -> Live {
        if d.kind == DeliveryKind::Control
            && matches!(Control::decode(&d.frame), Ok(Control::Resubscribe))
        {
            self.unplace();
            return Live::Resubscribe;
        }
        if d.term < self.term {
            tracing::debug!(channel = %d.channel, term = d.term, newest = self.term, "delivery from an older term; dropped");
            let resubscribe = self.pending.is_none();
            if resubscribe {
                self.unplace();
                self.hold();
            }
            return Live::Stale { resubscribe };
        }
        if let Some(pending) = self.pending.as_mut() {
            pending.push(d);
            return Live::Held;
        }
        self.term = d.term;
        let DeliveryKind::Publication { offset } = d.kind else {
            return Live::Deliver(d);
        };
        let Some(last) = self.last.as_mut() else {
            return Live::Deliver(d);
        };
        if offset <= last.offset {
            return Live::Duplicate;
        }
        if offset == last.offset + 1 {
            last.offset = offset;
            return Live::Deliver(d);
        }
        // Past the next offset: this gateway missed publications. Only the
        // broker the subscription is placed at is heard ([`Self::accepts`])
        // and its stream is ordered and cut, never thinned, so that broker
        // lost or replaced this gateway's subscription without the
        // reconciler having placed it again yet (a restart, a newer copy).
        // Passing this one on would skip what was missed silently; instead
        // it waits while the subscription is placed again from `last`,
        // whose reply fills the gap from the owner's history (or announces
        // a reset).
        tracing::debug!(channel = %d.channel, expected = last.offset + 1, offset, "delivery past the next offset; resubscribing");
        self.unplace();
        self.pending = Some(vec![d]);
        Live::Resubscribe
    }

    /// Ends the first subscription here at the reply's `position`: live
    /// deliveries continue after it (the session gives the client what it
    /// asked to recover); what arrived meanwhile is returned.
    pub(super) fn start(&mut self, position: Position, term: u64) -> Vec<Delivery> {
        self.settle(position, term, Vec::new(), None)
    }

    /// Turns a subscribe reply into what local clients must receive, in
    /// order. `had_position`: the request asked to recover from
    /// [`Self::last`] (a resubscription).
    pub(super) fn settle_reply(
        &mut self,
        channel: &ChannelName,
        had_position: bool,
        reply: SubscribeReply,
    ) -> Vec<Delivery> {
        let recovered = reply.recovered == Some(true);
        let publications = deliveries(channel, &reply.publications, reply.term);
        if !had_position || recovered {
            let publications = if recovered { publications } else { Vec::new() };
            return self.settle(reply.position, reply.term, publications, None);
        }
        // Without recovery, clients restart from what the owner still has:
        // the reset names the position just before it.
        let restart = match publications.first().map(|d| d.kind) {
            Some(DeliveryKind::Publication { offset }) => offset - 1,
            _ => reply.position.offset,
        };
        let reset = Delivery {
            channel: channel.clone(),
            kind: DeliveryKind::Reset { offset: restart },
            frame: frame::resubscribed(channel, restart, &reply.position.epoch),
            published_at_micros: 0,
            term: reply.term,
        };
        let position = Position {
            offset: restart,
            epoch: reply.position.epoch,
        };
        self.settle(position, reply.term, publications, Some(reset))
    }

    /// Ends a pending (re)subscription at `position`, answered by a copy of
    /// `term`: the reset if any, recovered publications, then what arrived
    /// live meanwhile, duplicates and older terms dropped.
    ///
    /// The reply's term is the epoch's from here, even when older than one
    /// heard before: [`Self::puts_off`] asked again while it was, and a
    /// reply taken anyway is the owner's truth (its newer copy is lost).
    fn settle(
        &mut self,
        position: Position,
        term: u64,
        recovered: Vec<Delivery>,
        reset: Option<Delivery>,
    ) -> Vec<Delivery> {
        let pending = self.pending.take().unwrap_or_default();
        // Where local clients stand: their last position if it is still in
        // this epoch, else (first subscription, or a reset) the reply's.
        //
        // A reset to the epoch clients are in, at a lower offset, is applied
        // as a new start too: the owner's copy is behind what was delivered
        // (it lost publications), and will number new ones from there.
        let mut last = match (&reset, &self.last) {
            (None, Some(last)) if last.epoch == position.epoch => last.offset,
            _ => position.offset,
        };
        self.term = term;
        let mut out = Vec::with_capacity(recovered.len() + pending.len() + 1);
        out.extend(reset);
        for d in recovered.into_iter().chain(pending) {
            if d.term < self.term {
                continue;
            }
            self.term = d.term;
            match d.kind {
                DeliveryKind::Publication { offset } if offset <= last => continue,
                DeliveryKind::Publication { offset } => last = offset,
                _ => {}
            }
            out.push(d);
        }
        self.last = Some(Position {
            offset: last.max(position.offset),
            epoch: position.epoch,
        });
        out
    }
}

/// Publications from a reply as deliveries, in the order the owner gave.
fn deliveries(channel: &ChannelName, publications: &[Publication], term: u64) -> Vec<Delivery> {
    publications
        .iter()
        .map(|p| Delivery {
            channel: channel.clone(),
            kind: DeliveryKind::Publication { offset: p.offset },
            frame: p.frame.clone(),
            published_at_micros: 0,
            term,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn channel() -> ChannelName {
        ChannelName::new("news").unwrap()
    }

    fn pos(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    fn publication(offset: u64) -> Delivery {
        Delivery {
            channel: channel(),
            kind: DeliveryKind::Publication { offset },
            frame: Bytes::from(format!("{{\"offset\":{offset}}}")),
            published_at_micros: 0,
            term: 0,
        }
    }

    fn publication_of(term: u64, offset: u64) -> Delivery {
        Delivery {
            term,
            ..publication(offset)
        }
    }

    fn event() -> Delivery {
        Delivery {
            channel: channel(),
            kind: DeliveryKind::Event,
            frame: Bytes::from_static(b"{}"),
            published_at_micros: 0,
            term: 0,
        }
    }

    fn reply(position: Position, recovered: Option<bool>, offsets: &[u64]) -> SubscribeReply {
        SubscribeReply {
            position,
            recoverable: true,
            recovered,
            publications: offsets
                .iter()
                .map(|&offset| Publication {
                    offset,
                    frame: publication(offset).frame,
                })
                .collect(),
            join_leave: None,
            term: 0,
        }
    }

    fn reply_of(
        term: u64,
        position: Position,
        recovered: Option<bool>,
        offsets: &[u64],
    ) -> SubscribeReply {
        SubscribeReply {
            term,
            ..reply(position, recovered, offsets)
        }
    }

    /// A subscription whose first reply settled at `at`.
    fn started(at: Position) -> Subscription {
        let mut sub = Subscription::new("b1".into());
        sub.hold();
        assert!(sub.start(at, 0).is_empty());
        sub
    }

    /// What the deliveries say, as the simulation checker reads them.
    fn kinds(out: &[Delivery]) -> Vec<DeliveryKind> {
        out.iter().map(|d| d.kind).collect()
    }

    fn delivered(live: Live) -> Option<u64> {
        match live {
            Live::Deliver(Delivery {
                kind: DeliveryKind::Publication { offset },
                ..
            }) => Some(offset),
            other => panic!("expected a delivered publication, got {other:?}"),
        }
    }

    #[test]
    fn the_next_offset_is_delivered() {
        let mut sub = started(pos(3, "e"));
        assert_eq!(delivered(sub.on_live(publication(4))), Some(4));
        assert_eq!(delivered(sub.on_live(publication(5))), Some(5));
        assert!(matches!(sub.on_live(event()), Live::Deliver(_)));
        assert_eq!(sub.last, Some(pos(5, "e")));
    }

    #[test]
    fn deliveries_are_taken_only_from_where_the_subscription_is_or_is_being_placed() {
        let mut sub = started(pos(3, "e"));
        assert!(sub.accepts(&"b1".into()));
        assert!(!sub.accepts(&"b2".into()));
        sub.placing = Some("b2".into());
        assert!(sub.accepts(&"b1".into()) && sub.accepts(&"b2".into()));
        assert!(!sub.accepts(&"b3".into()));
    }

    #[test]
    fn a_duplicate_is_dropped() {
        let mut sub = started(pos(3, "e"));
        delivered(sub.on_live(publication(4)));
        assert!(matches!(sub.on_live(publication(4)), Live::Duplicate));
        assert_eq!(sub.last, Some(pos(4, "e")));
    }

    #[test]
    fn a_reordered_publication_is_dropped() {
        let mut sub = started(pos(3, "e"));
        delivered(sub.on_live(publication(4)));
        delivered(sub.on_live(publication(5)));
        // 4 again after 5: an older copy (the previous owner's) came late.
        assert!(matches!(sub.on_live(publication(4)), Live::Duplicate));
        assert!(matches!(sub.on_live(publication(3)), Live::Duplicate));
        assert_eq!(sub.last, Some(pos(5, "e")));
    }

    #[test]
    fn a_gap_waits_for_a_resubscription_that_fills_it_in() {
        let mut sub = started(pos(3, "e"));
        sub.placed = true;
        assert!(matches!(sub.on_live(publication(6)), Live::Resubscribe));
        assert!(!sub.placed && sub.is_settling());
        assert_eq!(sub.last, Some(pos(3, "e")));
        assert!(matches!(sub.on_live(publication(7)), Live::Held));
        // The reconciler subscribes again from 3; the owner has 4..=7.
        sub.hold();
        let out = sub.settle_reply(
            &channel(),
            true,
            reply(pos(7, "e"), Some(true), &[4, 5, 6, 7]),
        );
        assert_eq!(
            kinds(&out),
            [4, 5, 6, 7].map(|offset| DeliveryKind::Publication { offset })
        );
        assert_eq!(sub.last, Some(pos(7, "e")));
    }

    #[test]
    fn a_gap_beyond_the_owners_history_is_announced() {
        let mut sub = started(pos(3, "e"));
        assert!(matches!(sub.on_live(publication(9)), Live::Resubscribe));
        sub.hold();
        let out = sub.settle_reply(&channel(), true, reply(pos(9, "e"), Some(false), &[8, 9]));
        assert_eq!(
            kinds(&out),
            [
                DeliveryKind::Reset { offset: 7 },
                DeliveryKind::Publication { offset: 8 },
                DeliveryKind::Publication { offset: 9 },
            ]
        );
    }

    #[test]
    fn live_deliveries_before_the_first_reply_wait_and_meet_it_without_duplicates() {
        let mut sub = Subscription::new("b1".into());
        sub.hold();
        assert!(sub.is_first());
        assert!(matches!(sub.on_live(publication(4)), Live::Held));
        assert!(matches!(sub.on_live(publication(5)), Live::Held));
        // The reply says the subscription took effect after 4.
        let out = sub.start(pos(4, "e"), 0);
        assert_eq!(kinds(&out), [DeliveryKind::Publication { offset: 5 }]);
        assert!(!sub.is_settling());
        assert_eq!(sub.last, Some(pos(5, "e")));
    }

    #[test]
    fn a_recovered_resubscription_fills_in_before_what_arrived_live() {
        let mut sub = started(pos(3, "e"));
        sub.hold();
        // The new owner's stream is already live while its reply is on the way.
        assert!(matches!(sub.on_live(publication(6)), Live::Held));
        assert!(matches!(sub.on_live(publication(7)), Live::Held));
        let out = sub.settle_reply(&channel(), true, reply(pos(6, "e"), Some(true), &[4, 5, 6]));
        assert_eq!(
            kinds(&out),
            [4, 5, 6, 7].map(|offset| DeliveryKind::Publication { offset })
        );
        assert_eq!(sub.last, Some(pos(7, "e")));
    }

    #[test]
    fn a_failed_resubscription_hands_back_what_waited() {
        let mut sub = started(pos(3, "e"));
        sub.hold();
        assert!(matches!(sub.on_live(publication(4)), Live::Held));
        let waited = sub.release();
        assert!(!sub.is_settling());
        assert_eq!(kinds(&waited), [DeliveryKind::Publication { offset: 4 }]);
        assert_eq!(delivered(sub.on_live(waited[0].clone())), Some(4));
    }

    #[test]
    fn a_lost_epoch_is_announced_then_the_new_one_follows() {
        let mut sub = started(pos(3, "e1"));
        sub.hold();
        assert!(matches!(sub.on_live(publication(3)), Live::Held));
        // The new owner has epoch e2 and retains 2..=3 of it.
        let out = sub.settle_reply(&channel(), true, reply(pos(3, "e2"), Some(false), &[2, 3]));
        assert_eq!(
            kinds(&out),
            [
                DeliveryKind::Reset { offset: 1 },
                DeliveryKind::Publication { offset: 2 },
                DeliveryKind::Publication { offset: 3 },
            ]
        );
        assert_eq!(&out[0].frame, &frame::resubscribed(&channel(), 1, "e2"));
        assert_eq!(sub.last, Some(pos(3, "e2")));
    }

    #[test]
    fn a_reset_without_retained_history_restarts_at_the_owners_position() {
        let mut sub = started(pos(3, "e1"));
        sub.hold();
        let out = sub.settle_reply(&channel(), true, reply(pos(9, "e2"), Some(false), &[]));
        assert_eq!(kinds(&out), [DeliveryKind::Reset { offset: 9 }]);
        assert_eq!(sub.last, Some(pos(9, "e2")));
    }

    /// Documents today's behaviour, which the simulation checker counts
    /// (`resurrected`, `redelivered`) rather than fails: the table keeps no
    /// record of ended epochs, so a reset back to one is applied and its
    /// retained publications are delivered again. Terms do not help here:
    /// they order the copies of one epoch, not epochs; what prevents it is
    /// the brokers' refusal to serve a copy while the newest term's data
    /// lives elsewhere (docs/replication.md, "Which copy wins").
    #[test]
    fn a_reset_to_an_ended_epoch_is_applied_and_announced() {
        let mut sub = started(pos(2, "e1"));
        delivered(sub.on_live(publication(3)));
        sub.hold();
        let out = sub.settle_reply(&channel(), true, reply(pos(1, "e2"), Some(false), &[1]));
        assert_eq!(kinds(&out)[0], DeliveryKind::Reset { offset: 0 });
        // Back to e1, which the reset above ended.
        sub.hold();
        let out = sub.settle_reply(
            &channel(),
            true,
            reply(pos(3, "e1"), Some(false), &[1, 2, 3]),
        );
        assert_eq!(
            kinds(&out),
            [
                DeliveryKind::Reset { offset: 0 },
                DeliveryKind::Publication { offset: 1 },
                DeliveryKind::Publication { offset: 2 },
                DeliveryKind::Publication { offset: 3 },
            ]
        );
        assert_eq!(&out[0].frame, &frame::resubscribed(&channel(), 0, "e1"));
        assert_eq!(sub.last, Some(pos(3, "e1")));
    }

    /// Documents today's behaviour (issue 13 names it as a cause of
    /// duplicates): the owner's copy of the epoch clients are in is behind
    /// what they were given (`since` lies in its future), so it answers
    /// without recovery at its own, lower, offset. The reset is applied as
    /// a new start, and offsets clients already had are delivered again.
    /// Not suppressed here: that owner numbers its next publications from
    /// its own offset, so the ones it delivers at offsets clients had are
    /// other publications, and dropping them as duplicates would lose them
    /// silently.
    #[test]
    fn a_reset_to_the_current_epoch_at_a_lower_offset_starts_over() {
        let mut sub = started(pos(3, "e"));
        for offset in 4..=6 {
            delivered(sub.on_live(publication(offset)));
        }
        sub.hold();
        let out = sub.settle_reply(&channel(), true, reply(pos(4, "e"), Some(false), &[]));
        assert_eq!(kinds(&out), [DeliveryKind::Reset { offset: 4 }]);
        assert_eq!(&out[0].frame, &frame::resubscribed(&channel(), 4, "e"));
        assert_eq!(sub.last, Some(pos(4, "e")));
        assert_eq!(delivered(sub.on_live(publication(5))), Some(5));
    }

    #[test]
    fn a_copy_behind_what_clients_were_given_is_asked_again_before_its_reset_is_taken() {
        let mut sub = started(pos(6, "e"));
        let t0 = Instant::now();
        let stale = reply(pos(4, "e"), Some(false), &[]);
        let since = pos(6, "e");
        assert!(sub.puts_off(Some(&since), &stale, t0));
        assert!(sub.puts_off(Some(&since), &stale, t0 + BEHIND_WAIT / 2));
        // The newer copy arrived: its reply is taken.
        let caught_up = reply(pos(9, "e"), Some(true), &[]);
        assert!(!sub.puts_off(Some(&since), &caught_up, t0 + BEHIND_WAIT / 2));
        // A copy still behind after the wait: its reset is taken.
        let later = t0 + BEHIND_WAIT;
        assert!(sub.puts_off(Some(&since), &stale, later));
        assert!(!sub.puts_off(Some(&since), &stale, later + BEHIND_WAIT));
        // Another epoch, or a first subscription, is never put off.
        assert!(!sub.puts_off(Some(&since), &reply(pos(0, "f"), Some(false), &[]), t0));
        assert!(!sub.puts_off(None, &stale, t0));
    }

    /// Fencing (docs/replication.md, "Gateways"): once a term has been
    /// heard in the epoch, a delivery of an older one is a frozen or
    /// cut-off ex-owner's and is refused, whatever its offset; a newer
    /// term's goes on in the same order.
    #[test]
    fn a_delivery_of_an_older_term_is_refused_and_a_newer_term_continues() {
        let mut sub = Subscription::new("b1".into());
        sub.hold();
        assert!(sub.start(pos(3, "e"), 2).is_empty());
        assert_eq!(delivered(sub.on_live(publication_of(2, 4))), Some(4));
        // The successor took over in term 3: same epoch, offsets go on.
        assert_eq!(delivered(sub.on_live(publication_of(3, 5))), Some(5));
        assert_eq!(sub.last, Some(pos(5, "e")));
        // The old leader of term 2, thawed, serving its copy alone, where
        // this subscription is placed: refused, and placed again.
        sub.placed = true;
        let stale = sub.on_live(publication_of(2, 6));
        assert!(matches!(stale, Live::Stale { resubscribe: true }));
        assert!(!sub.placed && sub.is_settling());
        // While that settles, more of it is dropped, and the newer term's
        // wait for the reply.
        let stale = sub.on_live(publication_of(2, 7));
        assert!(matches!(stale, Live::Stale { resubscribe: false }));
        assert!(matches!(sub.on_live(publication_of(3, 6)), Live::Held));
        let out = sub.settle_reply(&channel(), true, reply_of(3, pos(5, "e"), Some(true), &[]));
        assert_eq!(kinds(&out), [DeliveryKind::Publication { offset: 6 }]);
        assert_eq!(sub.last, Some(pos(6, "e")));
    }

    /// A newer term of the same epoch answering a resubscription is a
    /// continuation: no reset, offsets go on from where clients are, and
    /// what the older term's owner sent meanwhile is dropped.
    #[test]
    fn a_resubscription_answered_by_a_newer_term_continues_without_a_reset() {
        let mut sub = Subscription::new("b1".into());
        sub.hold();
        assert!(sub.start(pos(3, "e"), 1).is_empty());
        delivered(sub.on_live(publication_of(1, 4)));
        sub.hold();
        assert!(matches!(sub.on_live(publication_of(1, 5)), Live::Held));
        assert!(matches!(sub.on_live(publication_of(2, 6)), Live::Held));
        let out = sub.settle_reply(&channel(), true, reply_of(2, pos(5, "e"), Some(true), &[5]));
        assert_eq!(
            kinds(&out),
            [5, 6].map(|offset| DeliveryKind::Publication { offset })
        );
        // The held 5 of term 1 was dropped; the 5 delivered is term 2's.
        assert!(out.iter().all(|d| d.term == 2));
        let stale = sub.on_live(publication_of(1, 7));
        assert!(matches!(stale, Live::Stale { .. }));
    }

    /// A reply from a copy of an older term than clients heard, in their
    /// epoch, is a stale copy: asked again (for at most [`BEHIND_WAIT`])
    /// even when its offsets look complete; taken after the wait, and its
    /// term is the epoch's from then on.
    #[test]
    fn a_reply_of_an_older_term_is_asked_again_then_taken() {
        let mut sub = Subscription::new("b1".into());
        sub.hold();
        assert!(sub.start(pos(6, "e"), 3).is_empty());
        let since = pos(6, "e");
        let stale = reply_of(2, pos(6, "e"), Some(true), &[]);
        let t0 = Instant::now();
        assert!(sub.puts_off(Some(&since), &stale, t0));
        assert!(!sub.puts_off(Some(&since), &reply_of(3, pos(6, "e"), Some(true), &[]), t0));
        assert!(sub.puts_off(Some(&since), &stale, t0));
        assert!(!sub.puts_off(Some(&since), &stale, t0 + BEHIND_WAIT));
        // Another epoch's terms are not compared.
        assert!(!sub.puts_off(
            Some(&since),
            &reply_of(1, pos(0, "f"), Some(false), &[]),
            t0
        ));
        sub.hold();
        assert!(sub.settle_reply(&channel(), true, stale).is_empty());
        assert_eq!(delivered(sub.on_live(publication_of(2, 7))), Some(7));
    }

    /// A new epoch starts its terms again: the older epoch's term does not
    /// fence it.
    #[test]
    fn a_new_epoch_starts_its_terms_again() {
        let mut sub = Subscription::new("b1".into());
        sub.hold();
        assert!(sub.start(pos(3, "e1"), 4).is_empty());
        sub.hold();
        let out = sub.settle_reply(
            &channel(),
            true,
            reply_of(1, pos(0, "e2"), Some(false), &[]),
        );
        assert_eq!(kinds(&out), [DeliveryKind::Reset { offset: 0 }]);
        assert_eq!(delivered(sub.on_live(publication_of(1, 1))), Some(1));
    }

    #[test]
    fn the_owner_replacing_the_state_asks_for_a_resubscription() {
        let mut sub = started(pos(3, "e"));
        sub.placed = true;
        let control = Delivery {
            channel: channel(),
            kind: DeliveryKind::Control,
            frame: Control::Resubscribe.encode(),
            published_at_micros: 0,
            term: 0,
        };
        assert!(matches!(sub.on_live(control), Live::Resubscribe));
        assert!(!sub.placed);
        assert_eq!(sub.unplaced, 1);
    }

    #[test]
    fn other_control_commands_pass_to_the_gateway() {
        let mut sub = started(pos(3, "e"));
        let control = Delivery {
            channel: channel(),
            kind: DeliveryKind::Control,
            frame: Control::Unsubscribe { channel: channel() }.encode(),
            published_at_micros: 0,
            term: 0,
        };
        assert!(matches!(sub.on_live(control), Live::Deliver(_)));
    }
}
