//! The task's side of subscriptions: the table of entries it keeps across
//! connections, the subscribe and unsubscribe requests it sends for them,
//! their replies, and the care of entries that lagged or were refused for
//! a while. (The application's side, handles and positions, is
//! [`crate::subscription`].)

use serde_json::Value;
use switchboard_core::frame::RequestFrame;
use tokio::{sync::mpsc, time::Instant};

use super::Driver;
use crate::{
    backoff::Backoff,
    error::ClientError,
    frame::{self, SubscribeReply},
    request::Waiter,
    subscription::{Delivery, Entry, SubscribeOptions, SubscriptionEvent},
};

impl Driver {
    pub(super) fn add_subscription(
        &mut self,
        channel: String,
        options: SubscribeOptions,
        tx: mpsc::Sender<SubscriptionEvent>,
    ) -> Result<u64, ClientError> {
        if self.subs.contains_key(&channel) {
            return Err(ClientError::AlreadySubscribed(channel));
        }
        let id = self.next_sub;
        self.next_sub += 1;
        let retry = Backoff::with_random(self.opts.backoff, self.opts.jitter);
        self.subs
            .insert(channel, Entry::new(id, tx, &options, retry));
        Ok(id)
    }

    pub(super) fn remove_subscription(&mut self, channel: &str, sub: u64) -> Option<Entry> {
        if self.subs.get(channel).is_some_and(|e| e.id == sub) {
            self.subs.remove(channel)
        } else {
            None
        }
    }

    pub(super) fn send_subscribe(&mut self, channel: &str) {
        let generation = self.generation;
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        if entry.pending_on == Some(generation) {
            return;
        }
        let frame = frame::request(&RequestFrame::Subscribe {
            channel,
            since: entry.position.as_ref(),
        });
        entry.pending_on = Some(generation);
        entry.retry_at = None;
        let waiter = Waiter::Subscribe {
            channel: channel.to_owned(),
            sub: entry.id,
            was_recovering: entry.position.is_some(),
        };
        let (_, frame) = self
            .requests
            .send_now(frame, waiter, self.opts.request_timeout);
        self.outbox.push((None, frame));
    }

    pub(super) fn send_unsubscribe(&mut self, channel: &str) {
        let frame = frame::request(&RequestFrame::Unsubscribe { channel });
        let (_, frame) =
            self.requests
                .send_now(frame, Waiter::Unsubscribe, self.opts.request_timeout);
        self.outbox.push((None, frame));
    }

    /// Retries subscriptions refused for a while, and resumes those that
    /// lagged once their application has caught up: a fresh subscription
    /// from the last publication taken recovers what was dropped.
    pub(super) fn care_for_subscriptions(&mut self, generation: u64) {
        let now = Instant::now();
        let mut resubscribe = Vec::new();
        let mut retry = Vec::new();
        for (channel, entry) in &mut self.subs {
            if entry.lagged && entry.caught_up() && entry.pending_on != Some(generation) {
                entry.subscribed = false;
                resubscribe.push(channel.clone());
            } else if entry.retry_at.is_some_and(|at| at <= now) {
                retry.push(channel.clone());
            }
        }
        for channel in resubscribe {
            self.send_unsubscribe(&channel);
            self.send_subscribe(&channel);
        }
        for channel in retry {
            self.send_subscribe(&channel);
        }
    }

    pub(super) fn drop_gone_subscriptions(&mut self) {
        let gone: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, e)| e.is_gone())
            .map(|(c, _)| c.clone())
            .collect();
        for channel in gone {
            self.subs.remove(&channel);
            self.send_unsubscribe(&channel);
        }
    }

    pub(super) fn subscribe_reply(
        &mut self,
        channel: &str,
        sub: u64,
        was_recovering: bool,
        result: Result<Value, ClientError>,
        generation: u64,
    ) {
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        // A reply for an earlier subscription to the same channel.
        if entry.id != sub || entry.pending_on != Some(generation) {
            return;
        }
        let reply = result.and_then(|data| {
            serde_json::from_value::<SubscribeReply>(data)
                .map_err(|e| ClientError::Protocol(e.to_string()))
        });
        match reply {
            Ok(reply) => {
                if entry.subscribed(channel, reply, was_recovering) == Delivery::Gone {
                    self.subs.remove(channel);
                    self.send_unsubscribe(channel);
                }
            }
            Err(e) if e.is_temporary() => {
                entry.pending_on = None;
                entry.retry_at = Some(Instant::now() + entry.retry.next_delay());
            }
            Err(e) => {
                entry.refused(e);
                self.subs.remove(channel);
            }
        }
    }

    pub(super) fn all_subscribing(&mut self, code: u16, reason: &str) {
        self.subs
            .retain(|_, e| e.subscribing(code, reason) != Delivery::Gone);
    }
}
