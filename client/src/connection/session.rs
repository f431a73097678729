//! One open connection, served until it ends: it resubscribes and sends
//! what was queued, then reads frames, writes the outbox, pings when the
//! server has been silent, renews the token and looks after subscriptions.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_core::frame::RequestFrame;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::{self, Message};

use super::{
    Driver, Next, Ws,
    handshake::{Opened, messages},
    sleep_until_opt,
};
use crate::{
    advice::{Advice, advise, close_code},
    error::ClientError,
    event::{ClientEvent, State},
    frame,
    request::Waiter,
};

/// How often lagging and retrying subscriptions are looked after.
const CARE_INTERVAL: Duration = Duration::from_millis(50);

/// How long `disconnect()` waits to say goodbye to the server.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Most requests in one batched frame (the server refuses more).
const MAX_BATCH_REQUESTS: usize = 100;

/// Longest batched frame this client writes: the server's default
/// `limits.max_message_bytes`. A longer request goes alone.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// What tells a live connection from a silent one, and a stable one
/// (which resets the reconnect backoff) from one that keeps failing.
struct Liveness {
    connected_at: Instant,
    stable: bool,
    last_received: Instant,
    tick: Interval,
}

impl Liveness {
    /// Checked twice per ping interval, so that a silent server is pinged
    /// at most half an interval late.
    fn new(ping_interval: Duration) -> Self {
        let connected_at = Instant::now();
        let last_received = Instant::now();
        let half = (ping_interval / 2).max(Duration::from_millis(1));
        let mut tick = tokio::time::interval_at(Instant::now() + half, half);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            connected_at,
            stable: false,
            last_received,
            tick,
        }
    }
}

impl Driver {
    pub(super) async fn serve(&mut self, opened: Opened) -> Next {
        let Opened {
            mut ws,
            token,
            identity,
            batch,
            early,
        } = opened;
        let generation = self.generation;
        self.batch = batch;
        self.begin(token, identity);
        for message in early {
            self.on_frame(&message, generation);
        }
        let mut liveness = Liveness::new(self.opts.ping_interval);
        let mut refresh = None;

        loop {
            if !self.flush(&mut ws).await && self.abandon.is_none() {
                self.abandon = Some(Advice::retry(close_code::TRANSPORT_CLOSED, "write failed"));
            }
            if let Some(done) = self.stopping.take() {
                let next = self.goodbye(&mut ws).await;
                let _ = done.send(());
                return next;
            }
            if let Some(advice) = self.abandon.take() {
                // Dropping the socket is what a network failure looks like to the server.
                drop(ws);
                return self.lost(advice);
            }
            let deadline = self.requests.next_deadline();
            let needs_care = self.subs.values().any(|e| e.lagged || e.retry_at.is_some());
            tokio::select! {
                msg = ws.next() => {
                    liveness.last_received = Instant::now();
                    if let Some(next) = self.on_message(msg, generation) {
                        return next;
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None => {
                        let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
                        return Next::Exit;
                    }
                    Some(cmd) => {
                        self.command_online(cmd, generation);
                        self.take_ready_commands(generation);
                    }
                },
                _ = sleep_until_opt(deadline) => self.expire(),
                _ = liveness.tick.tick() => self.on_liveness_tick(&mut liveness),
                _ = tokio::time::sleep(CARE_INTERVAL), if needs_care => self.care_for_subscriptions(generation),
                _ = sleep_until_opt(self.refresh_at), if refresh.is_none() => refresh = self.start_refresh(),
                fetched = async { refresh.as_mut().expect("guarded by the condition").await }, if refresh.is_some() => {
                    refresh = None;
                    self.token_fetched(fetched);
                }
            }
        }
    }

    /// The connection is up: the per-connection state starts afresh, every
    /// subscription is sent again (from its last position) and queued
    /// requests go out, before the application hears `Connected`.
    fn begin(&mut self, token: Option<String>, identity: Option<(String, String)>) {
        self.token = token;
        self.disconnect = None;
        self.abandon = None;
        self.pinging = false;
        self.refresh_at = self.refresh_time();
        let (client_id, user_id) = match identity {
            Some((client_id, user_id)) => (Some(client_id), user_id),
            None => (None, String::new()),
        };
        self.set_state(State::Connected {
            client_id: client_id.clone(),
            user_id: user_id.clone(),
        });

        let channels: Vec<String> = self.subs.keys().cloned().collect();
        for channel in channels {
            self.send_subscribe(&channel);
        }
        for (id, frame) in self.requests.take_queued() {
            let written = frame.get("id").is_none().then_some(id);
            self.outbox.push((written, frame));
        }
        self.emit(ClientEvent::Connected { client_id, user_id });
    }

    /// `disconnect()` was called: close, and read to the server's close
    /// reply so the goodbye is not lost to a reset, then stop.
    async fn goodbye(&mut self, ws: &mut Ws) -> Next {
        let bye = async {
            ws.close(None).await?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<(), tungstenite::Error>(())
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, bye).await;
        self.end(close_code::DISCONNECT_CALLED, "disconnect called")
    }

    /// What the socket brought: a frame, or the end of the connection
    /// (`Some`, with what the task does next).
    fn on_message(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
        generation: u64,
    ) -> Option<Next> {
        match msg {
            Some(Ok(Message::Text(text))) => {
                for message in messages(&text, self.batch) {
                    self.on_frame(message, generation);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Some(self.lost(advise(self.disconnect.as_ref(), code, &reason)));
            }
            Some(Ok(_)) => {} // pings (answered by tungstenite), pongs
            Some(Err(_)) | None => {
                return Some(self.lost(advise(
                    self.disconnect.as_ref(),
                    close_code::ABNORMAL,
                    "connection lost",
                )));
            }
        }
        None
    }

    /// A connection that lasted `stable_after` resets the backoff; a server
    /// silent for a ping interval is pinged (no pong in time abandons the
    /// connection); subscriptions whose handles are gone are ended.
    fn on_liveness_tick(&mut self, liveness: &mut Liveness) {
        if !liveness.stable && liveness.connected_at.elapsed() >= self.opts.stable_after {
            liveness.stable = true;
            self.backoff.reset();
        }
        if !self.pinging && liveness.last_received.elapsed() >= self.opts.ping_interval {
            self.pinging = true;
            let frame = frame::request(&RequestFrame::Ping);
            let (_, frame) = self
                .requests
                .send_now(frame, Waiter::Ping, self.opts.pong_timeout);
            self.outbox.push((None, frame));
        }
        self.drop_gone_subscriptions();
    }

    /// Serves the commands already waiting, so that requests made
    /// together are written together (in one frame when batched), up to
    /// one batch; stops at a command that ends the connection.
    fn take_ready_commands(&mut self, generation: u64) {
        for _ in 1..MAX_BATCH_REQUESTS {
            if self.stopping.is_some() || self.abandon.is_some() {
                return;
            }
            match self.commands.try_recv() {
                Ok(cmd) => self.command_online(cmd, generation),
                Err(_) => return,
            }
        }
    }

    /// Writes the outbox; false if the socket did not take it in time.
    async fn flush(&mut self, ws: &mut Ws) -> bool {
        if self.outbox.is_empty() {
            return true;
        }
        let frames = std::mem::take(&mut self.outbox);
        let batch = self.batch;
        let write = async {
            for text in texts(&frames, batch) {
                ws.feed(Message::text(text)).await?;
            }
            ws.flush().await
        };
        let ok = matches!(
            tokio::time::timeout(self.opts.write_timeout, write).await,
            Ok(Ok(()))
        );
        for id in frames.into_iter().filter_map(|(id, _)| id) {
            if let Some(req) = self.requests.take(id) {
                match req.waiter {
                    Waiter::Written(tx) if ok => {
                        let _ = tx.send(Ok(Value::Null));
                    }
                    waiter => waiter.fail(ClientError::ConnectionLost),
                }
            }
        }
        ok
    }
}

/// The outbox as frame texts: one per request, or batched, as few as the
/// batch bounds allow (compact JSON has no line breaks to split wrong).
fn texts(frames: &[(Option<u64>, Value)], batch: bool) -> Vec<String> {
    if !batch {
        return frames.iter().map(|(_, f)| f.to_string()).collect();
    }
    let mut texts: Vec<String> = Vec::new();
    let mut in_last = 0;
    for (_, frame) in frames {
        let text = frame.to_string();
        match texts.last_mut() {
            Some(last)
                if in_last < MAX_BATCH_REQUESTS
                    && last.len() + 1 + text.len() <= MAX_BATCH_BYTES =>
            {
                last.push('\n');
                last.push_str(&text);
                in_last += 1;
            }
            _ => {
                texts.push(text);
                in_last = 1;
            }
        }
    }
    texts
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn batched_texts_respect_both_bounds() {
        let small: Vec<_> = (0..250).map(|i| (None, json!({ "n": i }))).collect();
        let texts = texts(&small, true);
        let counts: Vec<usize> = texts.iter().map(|t| t.split('\n').count()).collect();
        assert_eq!(counts, [100, 100, 50]);
        assert_eq!(texts[2].split('\n').next(), Some("{\"n\":200}"));

        let big = "x".repeat(40 * 1024);
        let large = vec![(None, json!(big)), (None, json!(big)), (None, json!(1))];
        let counts: Vec<usize> = super::texts(&large, true)
            .iter()
            .map(|t| t.split('\n').count())
            .collect();
        assert_eq!(counts, [1, 2]);
        assert_eq!(super::texts(&small, false).len(), 250);
    }
}
