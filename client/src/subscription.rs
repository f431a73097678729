//! One channel subscription as the connection keeps it, and the events it
//! reports to the application's handle ([`crate::Subscription`]). A
//! subscription outlives connections: it resumes from the last position it
//! delivered and drops anything it delivered already.

use tokio::sync::mpsc;

use crate::{
    error::ClientError,
    frame::{ClientInfo, Position, Publication, SubscribeReply},
};

/// What a subscription reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionEvent {
    /// The subscription is live (again). Retained publications follow as
    /// `Message`s.
    Subscribed(Subscribed),
    /// The connection is gone; the subscription waits for the next one.
    Subscribing {
        code: u16,
        reason: String,
    },
    /// The server refused the subscription; it is over.
    Unsubscribed {
        error: ClientError,
    },
    Message(Publication),
    Join(ClientInfo),
    Leave(ClientInfo),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
    /// Whether the channel keeps history, so that recovery can work.
    pub recoverable: bool,
    /// Whether the subscription resumed from a known position.
    pub was_recovering: bool,
    /// Whether every publication since that position was delivered
    /// (false when not recovering). If false, reload state from elsewhere.
    pub recovered: bool,
    /// How many retained publications follow.
    pub publications: usize,
}

/// Options of [`crate::Client::subscribe_with`].
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Resume after a position the application stored earlier.
    pub since: Option<Position>,
    /// Events buffered for the application. A subscription whose buffer is
    /// full stops taking publications and, once the application has read
    /// half of it, resubscribes from the last one it took (history
    /// permitting, nothing is lost; `join`/`leave` in between are).
    pub capacity: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            since: None,
            capacity: 1024,
        }
    }
}

/// Whether an event reached the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    /// The buffer is full: the subscription lags.
    Full,
    /// The application dropped its handle.
    Gone,
}

/// What the connection keeps per subscription.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Tells this subscription from a later one to the same channel.
    pub id: u64,
    tx: mpsc::Sender<SubscriptionEvent>,
    capacity: usize,
    /// The last publication delivered (or the channel's position when the
    /// subscription took effect): where a resubscription resumes.
    pub position: Option<Position>,
    pub subscribed: bool,
    /// The connection a subscribe request is in flight on.
    pub pending_on: Option<u64>,
    /// The buffer overflowed; publications are dropped until a resubscription.
    pub lagged: bool,
    /// Failed temporary attempts, and when to try again.
    pub retry: crate::backoff::Backoff,
    pub retry_at: Option<tokio::time::Instant>,
}

impl Entry {
    pub(crate) fn new(
        id: u64,
        tx: mpsc::Sender<SubscriptionEvent>,
        options: &SubscribeOptions,
        retry: crate::backoff::Backoff,
    ) -> Self {
        Self {
            id,
            tx,
            capacity: options.capacity.max(1),
            position: options.since.clone(),
            subscribed: false,
            pending_on: None,
            lagged: false,
            retry,
            retry_at: None,
        }
    }

    fn send(&mut self, event: SubscriptionEvent) -> Delivery {
        match self.tx.try_send(event) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged = true;
                Delivery::Full
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }

    /// Whether the application has read enough of a full buffer to resume.
    pub(crate) fn caught_up(&self) -> bool {
        self.tx.capacity() * 2 >= self.capacity
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// The connection ended or is not there yet.
    pub(crate) fn subscribing(&mut self, code: u16, reason: &str) -> Delivery {
        self.pending_on = None;
        self.retry_at = None;
        if !self.subscribed {
            return Delivery::Delivered;
        }
        self.subscribed = false;
        if self.lagged {
            return Delivery::Full;
        }
        self.send(SubscriptionEvent::Subscribing {
            code,
            reason: reason.to_owned(),
        })
    }

    /// Applies the server's subscribe reply.
    pub(crate) fn subscribed(
        &mut self,
        channel: &str,
        reply: SubscribeReply,
        was_recovering: bool,
    ) -> Delivery {
        self.pending_on = None;
        self.subscribed = true;
        self.lagged = false;
        self.retry.reset();
        let recovered = was_recovering && reply.recovered == Some(true);
        let told = self.send(SubscriptionEvent::Subscribed(Subscribed {
            channel: channel.to_owned(),
            offset: reply.offset,
            epoch: reply.epoch.clone(),
            recoverable: reply.recoverable,
            was_recovering,
            recovered,
            publications: reply.publications.as_ref().map_or(0, Vec::len),
        }));
        if told != Delivery::Delivered {
            return told;
        }
        for p in reply.publications.unwrap_or_default() {
            let d = self.message(p);
            if d != Delivery::Delivered {
                return d;
            }
        }
        self.position = Some(Position {
            offset: reply.offset,
            epoch: reply.epoch,
        });
        Delivery::Delivered
    }

    /// A publication, live or recovered.
    pub(crate) fn message(&mut self, p: Publication) -> Delivery {
        if !self.subscribed || self.lagged {
            return Delivery::Delivered;
        }
        // The server promises no repeats on one subscription; this also
        // covers the seam between recovered and live publications.
        if let Some(last) = &self.position
            && last.epoch == p.epoch
            && p.offset <= last.offset
        {
            return Delivery::Delivered;
        }
        let position = p.position();
        let d = self.send(SubscriptionEvent::Message(p));
        if d == Delivery::Delivered {
            self.position = Some(position);
        }
        d
    }

    /// A join or leave event; not recoverable, so dropped while lagging.
    pub(crate) fn presence(&mut self, event: SubscriptionEvent) -> Delivery {
        if !self.subscribed || self.lagged {
            return Delivery::Delivered;
        }
        self.send(event)
    }

    /// The server refused the subscription for good.
    pub(crate) fn refused(&mut self, error: ClientError) {
        // The application may be gone or behind; this is the last event either way.
        let _ = self.tx.try_send(SubscriptionEvent::Unsubscribed { error });
    }
}
