//! Publisher connections: connect, wait for the publish phase, then write
//! publications on a fixed schedule (open loop: they never wait for
//! deliveries), and stay connected until the run ends.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use switchboard_core::frame::Kind;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{
    dialer::Ws,
    load::{Phase, Run},
    payload::{ServerFrame, messages, publish_frame},
    tally::Tally,
};

/// Publisher `p` of `publishers`: connects, then publishes to its
/// channels in turn, at `rate / publishers` per second, for the planned
/// duration.
pub async fn task(run: Arc<Run>, p: usize, publishers: usize) {
    let Some(mut ws) = run.dial(run.plan.connections + p).await else {
        return;
    };
    Tally::bump(&run.tally.publishers_connected);
    let Some(start) = publish_phase(&run, &mut ws).await else {
        return;
    };
    if publish(&run, &mut ws, Schedule::new(&run, p, publishers, start))
        .await
        .is_none()
    {
        return;
    }
    // Stay connected until the run ends: closing now would be noise in
    // the server while subscribers drain.
    loop {
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => return,
            msg = ws.next() => if !read_frame(&run, msg) {
                return;
            },
        }
    }
}

/// Waits for the publish phase and returns its start (`Phase::Publish`'s
/// `at_micros`); None when the run stops or the connection goes first.
async fn publish_phase(run: &Run, ws: &mut Ws) -> Option<u64> {
    let mut phase = run.phase.subscribe();
    let initial = *phase.borrow_and_update();
    loop {
        if let Phase::Publish { at_micros } = initial {
            return Some(at_micros);
        }
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => return None,
            changed = phase.changed() => {
                changed.ok()?;
                if let Phase::Publish { at_micros } = *phase.borrow_and_update() {
                    return Some(at_micros);
                }
            }
            msg = ws.next() => if !read_frame(run, msg) {
                return None;
            },
        }
    }
}

/// When publisher `p` sends what, in microseconds since `Run::origin`.
struct Schedule {
    p: usize,
    /// Its channels, by index and name, sent to in turn.
    channels: Vec<(usize, String)>,
    start: u64,
    end: u64,
    period: f64,
    offset: f64,
}

impl Schedule {
    fn new(run: &Run, p: usize, publishers: usize, start: u64) -> Self {
        let channels = run
            .plan
            .channels_of_publisher(p, publishers)
            .into_iter()
            .map(|c| (c, run.plan.channel_name(c)))
            .collect();
        // Publishers are staggered across one period so that they do not all
        // fire in the same instant.
        let period = publishers as f64 / run.plan.rate;
        Self {
            p,
            channels,
            start,
            end: start + run.plan.duration.as_micros() as u64,
            period,
            offset: period * p as f64 / publishers as f64,
        }
    }

    /// When publication `i` is due.
    fn due(&self, i: u64) -> u64 {
        self.start + ((self.offset + self.period * i as f64) * 1e6) as u64
    }
}

/// Publishes on `schedule` until its end; None when the run stops or the
/// connection goes first.
async fn publish(run: &Run, ws: &mut Ws, schedule: Schedule) -> Option<()> {
    let channels = &schedule.channels;
    let mut sent = 0u64;
    let mut seq = vec![0u64; channels.len()];
    let deadline = sleep_until(run.origin + Duration::from_micros(schedule.due(0)));
    tokio::pin!(deadline);
    while schedule.due(sent) < schedule.end {
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => return None,
            _ = &mut deadline => {
                let i = (sent % channels.len() as u64) as usize;
                let (channel, name) = &channels[i];
                seq[i] += 1;
                let now = run.now_micros();
                run.tally.lag.record(schedule.p, now.saturating_sub(schedule.due(sent)));
                let frame = publish_frame(name, seq[i], now, run.plan.payload);
                if ws.send(Message::Text(frame.into())).await.is_err() {
                    Tally::bump(&run.tally.closed_by_server);
                    return None;
                }
                run.tally.published[*channel].fetch_add(1, Relaxed);
                sent += 1;
                deadline.as_mut().reset(run.origin + Duration::from_micros(schedule.due(sent)));
            }
            msg = ws.next() => if !read_frame(run, msg) {
                return None;
            },
        }
    }
    Some(())
}

/// Handles what a publisher reads (error frames, pings); false when the
/// connection is gone.
fn read_frame(run: &Run, msg: Option<Result<Message, tungstenite::Error>>) -> bool {
    match msg {
        Some(Ok(Message::Text(text))) => {
            for message in messages(&text, run.plan.batch) {
                if ServerFrame::parse(message).is_none_or(|f| f.kind == Kind::Error) {
                    Tally::add(&run.tally.errors, 1);
                }
            }
            true
        }
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
            run.closed();
            false
        }
        Some(Ok(_)) => true,
    }
}
