//! Subscriber connections: connect, wait for the subscribe phase,
//! subscribe their channels one request at a time, then count, check and
//! time every publication they receive.

use std::{
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use switchboard_core::frame::{ErrorCode, Kind};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use super::{
    load::{Phase, Run},
    payload::{ServerFrame, messages, publication, subscribe_frame},
    tally::Tally,
};

/// How long a subscriber waits before retrying a rate-limited subscribe.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Subscriber connection `conn`: connects, subscribes when told, and
/// checks deliveries until the run stops.
pub async fn task(run: Arc<Run>, conn: usize) {
    let Some(mut ws) = run.dial(conn).await else {
        // Its subscriptions will never be: the subscribe phase must not
        // wait for them.
        let planned = run.plan.channels_of(conn).len();
        run.tally.subscribe_failed.fetch_add(planned, Relaxed);
        return;
    };
    Tally::bump(&run.tally.connected);
    let mut subs = Subscriptions::new(&run, conn);
    let mut phase = run.phase.subscribe();
    let mut request = NextRequest::none();
    let mut started = *phase.borrow_and_update() >= Phase::Subscribe || subs.is_empty();
    if started && !subs.is_empty() {
        request.at(Some(Instant::now()));
    }
    loop {
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => break,
            changed = phase.changed(), if !started => {
                if changed.is_err() {
                    break;
                }
                if *phase.borrow_and_update() >= Phase::Subscribe {
                    started = true;
                    request.at(Some(Instant::now()));
                }
            }
            _ = &mut request.timer, if request.due.is_some() => {
                request.at(None);
                if ws.send(Message::Text(subs.request(&run).into())).await.is_err() {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    for message in messages(&text, run.plan.batch) {
                        if let Some(at) = subs.read(&run, message) {
                            request.at(Some(at));
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    run.closed();
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    subs.settle(&run);
}

/// When to send the next subscribe request: `due` is None when none is
/// (not yet, or all are sent), and `timer` fires at `due`.
struct NextRequest {
    due: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl NextRequest {
    fn none() -> Self {
        Self {
            due: None,
            timer: Box::pin(sleep_until(Self::far())),
        }
    }

    fn at(&mut self, due: Option<Instant>) {
        self.due = due;
        self.timer.as_mut().reset(due.unwrap_or_else(Self::far));
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(86_400)
    }
}

/// One subscription of a subscriber connection.
struct Subscription {
    channel: usize,
    received: u64,
    last_seq: u64,
}

/// A subscriber connection's subscriptions, in ascending channel order,
/// requested one at a time.
struct Subscriptions {
    conn: usize,
    list: Vec<Subscription>,
    /// The next one to request: every one before it is established or
    /// refused.
    next: usize,
}

impl Subscriptions {
    fn new(run: &Run, conn: usize) -> Self {
        let list = run
            .plan
            .channels_of(conn)
            .into_iter()
            .map(|channel| Subscription {
                channel,
                received: 0,
                last_seq: 0,
            })
            .collect();
        Self {
            conn,
            list,
            next: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The subscribe request for the next subscription; its id is its
    /// position plus one.
    fn request(&self, run: &Run) -> String {
        let channel = run.plan.channel_name(self.list[self.next].channel);
        subscribe_frame(&channel, self.next + 1)
    }

    /// Takes in one text frame from the server; returns when to send the
    /// next subscribe request, if that changed.
    fn read(&mut self, run: &Run, text: &str) -> Option<Instant> {
        let Some(frame) = ServerFrame::parse(text) else {
            Tally::add(&run.tally.errors, 1);
            return None;
        };
        if let Some((channel, seq, sent)) = publication(&frame) {
            self.deliver(run, channel, seq, sent);
            return None;
        }
        let answers_next = frame.id.is_some_and(|id| id as usize == self.next + 1);
        match frame.kind {
            Kind::Response if answers_next => {
                Tally::bump(&run.tally.subscribed);
                run.tally.subscribers[self.list[self.next].channel].fetch_add(1, Relaxed);
                self.advance()
            }
            Kind::Error if answers_next && frame.code == Some(ErrorCode::RateLimited.get()) => {
                Some(Instant::now() + RETRY_AFTER)
            }
            Kind::Error if answers_next => {
                Tally::bump(&run.tally.subscribe_failed);
                self.advance()
            }
            Kind::Join | Kind::Leave => {
                Tally::add(&run.tally.events, 1);
                None
            }
            Kind::Error => {
                Tally::add(&run.tally.errors, 1);
                None
            }
            _ => None,
        }
    }

    /// Moves on to the next subscription: due now, if there is one.
    fn advance(&mut self) -> Option<Instant> {
        self.next += 1;
        (self.next < self.list.len()).then(Instant::now)
    }

    /// Counts one publication received.
    fn deliver(&mut self, run: &Run, channel: &str, seq: u64, sent: u64) {
        let Some(index) = run.plan.channel_index(channel) else {
            return;
        };
        let Ok(at) = self.list.binary_search_by_key(&index, |s| s.channel) else {
            return;
        };
        let now = run.now_micros();
        let sub = &mut self.list[at];
        sub.received += 1;
        if seq <= sub.last_seq {
            Tally::add(&run.tally.order_violations, 1);
        } else {
            sub.last_seq = seq;
        }
        Tally::add(&run.tally.delivered, 1);
        run.tally
            .latency
            .record(self.conn, now.saturating_sub(sent));
    }

    /// Settles the accounts when the connection ends: subscriptions never
    /// answered count as failed, and what an answered one did not receive
    /// of its channel's publications as lost (a refused one received
    /// nothing).
    fn settle(&self, run: &Run) {
        for _ in self.next..self.list.len() {
            Tally::bump(&run.tally.subscribe_failed);
        }
        let lost: u64 = self.list[..self.next]
            .iter()
            .map(|s| {
                run.tally.published[s.channel]
                    .load(Relaxed)
                    .saturating_sub(s.received)
            })
            .sum();
        Tally::add(&run.tally.lost, lost);
    }
}
