//! The load itself: one task per connection. Subscribers connect, wait
//! for the subscribe phase, subscribe their channels one request at a
//! time, then count, check and time every publication they receive.
//! Publishers connect, wait for the publish phase, then write publications
//! on a fixed schedule (open loop: they never wait for deliveries).
//!
//! Every task keeps reading its socket in every phase, so the server's
//! pings are answered and nothing it sends piles up in the kernel.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    sync::{Semaphore, watch},
    time::{Instant, sleep_until},
};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{
    dialer::{Dialer, Ws},
    payload::{ServerFrame, publish_frame},
    plan::Plan,
    tally::Tally,
};

/// Where the run is; tasks wait on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Connect,
    Subscribe,
    /// Publishers start; the schedule counts from `Run::origin` plus this.
    Publish {
        at_micros: u64,
    },
}

/// Error code of a refused request that may be retried later.
const RATE_LIMITED: u32 = 110;

/// How long a subscriber waits before retrying a rate-limited subscribe.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Longest a connection may take to open, handshake included.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection task shares.
pub struct Run {
    pub plan: Plan,
    pub dialer: Dialer,
    pub tally: Tally,
    pub phase: watch::Sender<Phase>,
    pub stop: CancellationToken,
    /// Timestamps in payloads are microseconds since this instant: one
    /// monotonic clock for publishers and subscribers in this process.
    pub origin: Instant,
    pub connecting: Semaphore,
}

impl Run {
    pub fn now_micros(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    async fn dial(&self, n: usize) -> Option<Ws> {
        let dialed = {
            let _permit = self.connecting.acquire().await.ok()?;
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                dialed = tokio::time::timeout(DIAL_TIMEOUT, self.dialer.dial(n)) => {
                    dialed.unwrap_or_else(|_| Err(anyhow::anyhow!("no handshake within {DIAL_TIMEOUT:?}")))
                }
            }
        };
        match dialed {
            Ok(ws) => Some(ws),
            Err(e) => {
                Tally::bump(&self.tally.connect_failed);
                // The first few tell why; the count tells how many.
                if Tally::count(&self.tally.connect_failed) <= 3 {
                    eprintln!("connection {n} failed: {e:#}");
                }
                None
            }
        }
    }
}

/// One subscription of a subscriber connection.
struct Subscription {
    channel: usize,
    received: u64,
    last_seq: u64,
}

/// Subscriber connection `conn`: connects, subscribes when told, and
/// checks deliveries until the run stops.
pub async fn subscriber(run: Arc<Run>, conn: usize) {
    let Some(mut ws) = run.dial(conn).await else {
        // Its subscriptions will never be: the subscribe phase must not
        // wait for them.
        let planned = run.plan.channels_of(conn).len();
        run.tally.subscribe_failed.fetch_add(planned, Relaxed);
        return;
    };
    Tally::bump(&run.tally.connected);
    let mut subs: Vec<Subscription> = run
        .plan
        .channels_of(conn)
        .into_iter()
        .map(|channel| Subscription {
            channel,
            received: 0,
            last_seq: 0,
        })
        .collect();
    let mut phase = run.phase.subscribe();
    // The next subscription to request, and when (None: not yet, or done).
    let mut next = 0usize;
    let mut request_at: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86_400);
    let retry = sleep_until(far());
    tokio::pin!(retry);
    let mut started = *phase.borrow_and_update() >= Phase::Subscribe || subs.is_empty();
    if started && !subs.is_empty() {
        request_at = Some(Instant::now());
        retry.as_mut().reset(Instant::now());
    }
    let mut alive = true;

    while alive {
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => break,
            changed = phase.changed(), if !started => {
                if changed.is_err() {
                    break;
                }
                if *phase.borrow_and_update() >= Phase::Subscribe {
                    started = true;
                    request_at = Some(Instant::now());
                    retry.as_mut().reset(Instant::now());
                }
            }
            _ = &mut retry, if request_at.is_some() => {
                request_at = None;
                retry.as_mut().reset(far());
                let channel = run.plan.channel_name(subs[next].channel);
                let frame = format!(r#"{{"type":"subscribe","id":{},"channel":"{channel}"}}"#, next + 1);
                if ws.send(Message::Text(frame.into())).await.is_err() {
                    alive = false;
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        if !run.stop.is_cancelled() {
                            Tally::bump(&run.tally.closed_by_server);
                        }
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                let Some(frame) = ServerFrame::parse(&text) else {
                    Tally::add(&run.tally.errors, 1);
                    continue;
                };
                if let Some((channel, seq, sent)) = frame.publication() {
                    deliver(&run, conn, &mut subs, channel, seq, sent);
                    continue;
                }
                match (frame.kind, frame.id) {
                    ("response", Some(id)) if id as usize == next + 1 => {
                        Tally::bump(&run.tally.subscribed);
                        run.tally.subscribers[subs[next].channel].fetch_add(1, Relaxed);
                        next += 1;
                        if next < subs.len() {
                            request_at = Some(Instant::now());
                            retry.as_mut().reset(Instant::now());
                        }
                    }
                    ("error", Some(id)) if id as usize == next + 1 => {
                        if frame.code == Some(RATE_LIMITED) {
                            request_at = Some(Instant::now() + RETRY_AFTER);
                            retry.as_mut().reset(Instant::now() + RETRY_AFTER);
                        } else {
                            Tally::bump(&run.tally.subscribe_failed);
                            next += 1;
                            if next < subs.len() {
                                request_at = Some(Instant::now());
                                retry.as_mut().reset(Instant::now());
                            }
                        }
                    }
                    ("join" | "leave", _) => Tally::add(&run.tally.events, 1),
                    ("error", _) => Tally::add(&run.tally.errors, 1),
                    _ => {}
                }
            }
        }
    }
    // Subscriptions never established count as failed.
    for _ in next..subs.len() {
        Tally::bump(&run.tally.subscribe_failed);
    }
    let lost: u64 = subs[..next]
        .iter()
        .map(|s| {
            run.tally.published[s.channel]
                .load(Relaxed)
                .saturating_sub(s.received)
        })
        .sum();
    Tally::add(&run.tally.lost, lost);
}

/// Counts one publication received on `conn`.
fn deliver(run: &Run, conn: usize, subs: &mut [Subscription], channel: &str, seq: u64, sent: u64) {
    let Some(index) = run.plan.channel_index(channel) else {
        return;
    };
    let Ok(at) = subs.binary_search_by_key(&index, |s| s.channel) else {
        return;
    };
    let now = run.now_micros();
    let sub = &mut subs[at];
    sub.received += 1;
    if seq <= sub.last_seq {
        Tally::add(&run.tally.order_violations, 1);
    } else {
        sub.last_seq = seq;
    }
    Tally::add(&run.tally.delivered, 1);
    run.tally.latency.record(conn, now.saturating_sub(sent));
}

/// Publisher `p` of `publishers`: connects, then publishes to its
/// channels in turn, at `rate / publishers` per second, for the planned
/// duration.
pub async fn publisher(run: Arc<Run>, p: usize, publishers: usize) {
    let Some(mut ws) = run.dial(run.plan.connections + p).await else {
        return;
    };
    Tally::bump(&run.tally.publishers_connected);
    let channels: Vec<(usize, String)> = run
        .plan
        .channels_of_publisher(p, publishers)
        .into_iter()
        .map(|c| (c, run.plan.channel_name(c)))
        .collect();
    let mut phase = run.phase.subscribe();
    let initial = *phase.borrow_and_update();
    let start = loop {
        if let Phase::Publish { at_micros } = initial {
            break at_micros;
        }
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => return,
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Phase::Publish { at_micros } = *phase.borrow_and_update() {
                    break at_micros;
                }
            }
            msg = ws.next() => if !read_publisher_frame(&run, msg) {
                return;
            },
        }
    };
    // Publishers are staggered across one period so that they do not all
    // fire in the same instant.
    let period = publishers as f64 / run.plan.rate;
    let offset = period * p as f64 / publishers as f64;
    let end = start + run.plan.duration.as_micros() as u64;
    let due = |i: u64| start + ((offset + period * i as f64) * 1e6) as u64;
    let mut sent = 0u64;
    let mut seq = vec![0u64; channels.len()];
    let deadline = sleep_until(run.origin + Duration::from_micros(due(0)));
    tokio::pin!(deadline);
    while due(sent) < end {
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => return,
            _ = &mut deadline => {
                let i = (sent % channels.len() as u64) as usize;
                let (channel, name) = &channels[i];
                seq[i] += 1;
                let now = run.now_micros();
                run.tally.lag.record(p, now.saturating_sub(due(sent)));
                let frame = publish_frame(name, seq[i], now, run.plan.payload);
                if ws.send(Message::Text(frame.into())).await.is_err() {
                    Tally::bump(&run.tally.closed_by_server);
                    return;
                }
                run.tally.published[*channel].fetch_add(1, Relaxed);
                sent += 1;
                deadline.as_mut().reset(run.origin + Duration::from_micros(due(sent)));
            }
            msg = ws.next() => if !read_publisher_frame(&run, msg) {
                return;
            },
        }
    }
    // Stay connected until the run ends: closing now would be noise in
    // the server while subscribers drain.
    loop {
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => return,
            msg = ws.next() => if !read_publisher_frame(&run, msg) {
                return;
            },
        }
    }
}

/// Handles what a publisher reads (error frames, pings); false when the
/// connection is gone.
fn read_publisher_frame(
    run: &Run,
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> bool {
    match msg {
        Some(Ok(Message::Text(text))) => {
            if ServerFrame::parse(&text).is_none_or(|f| f.kind == "error") {
                Tally::add(&run.tally.errors, 1);
            }
            true
        }
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
            if !run.stop.is_cancelled() {
                Tally::bump(&run.tally.closed_by_server);
            }
            false
        }
        Some(Ok(_)) => true,
    }
}
