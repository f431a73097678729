//! The connection task: one WebSocket at a time, opened, authenticated,
//! watched for silence, and replaced with backoff when it fails. It owns
//! the subscriptions and the requests, so that both outlive sockets.

use std::{collections::HashMap, pin::pin, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::{
    net::TcpStream,
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior, sleep_until},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message},
};

use crate::{
    advice::{Advice, DisconnectFrame, advise, close_code},
    backoff::Backoff,
    client::Options,
    error::ClientError,
    event::{ClientEvent, State},
    frame::{Publication, ServerFrame, SubscribeReply},
    request::{Requests, Waiter},
    subscription::{Delivery, Entry, SubscribeOptions, SubscriptionEvent},
    token::{BoxError, TokenSource, expiry, refresh_delay},
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The id of each connection's `auth` request; other requests count from 1.
const AUTH_ID: u64 = 0;

/// How often lagging and retrying subscriptions are looked after.
const CARE_INTERVAL: Duration = Duration::from_millis(50);

/// How long `disconnect()` waits to say goodbye to the server.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the application asks of the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Request {
        frame: Map<String, Value>,
        waiter: Waiter,
        timeout: Duration,
    },
    Subscribe {
        channel: String,
        options: SubscribeOptions,
        tx: mpsc::Sender<SubscriptionEvent>,
        reply: oneshot::Sender<Result<u64, ClientError>>,
    },
    Unsubscribe {
        channel: String,
        sub: u64,
        done: Option<oneshot::Sender<()>>,
    },
    Reconnect {
        done: oneshot::Sender<()>,
    },
    Disconnect {
        done: oneshot::Sender<()>,
    },
}

/// What the task does next.
enum Next {
    Connect,
    Wait(Instant),
    /// Stopped: requests fail at once until `reconnect()`.
    Stop,
    /// Every handle is gone.
    Exit,
}

/// Why opening a connection failed.
enum Failure {
    Token(String),
    Closed {
        advice: Advice,
        refused: Option<ClientError>,
    },
    /// Waiting cannot help (a malformed URL, `wss://` without TLS support).
    Fatal(String),
}

struct Opened {
    ws: Ws,
    token: Option<String>,
    /// `(client_id, user_id)` from `authenticated`; `None` when anonymous.
    identity: Option<(String, String)>,
}

pub(crate) struct Driver {
    url: String,
    opts: Options,
    token_source: TokenSource,
    /// The token of the current connection.
    token: Option<String>,
    commands: mpsc::Receiver<Command>,
    state: watch::Sender<State>,
    events: broadcast::Sender<ClientEvent>,
    backoff: Backoff,
    subs: HashMap<String, Entry>,
    next_sub: u64,
    requests: Requests,
    /// Counts connections, so that replies and subscribe requests of an old
    /// one are told apart.
    generation: u64,
    // Per connection:
    /// Frames to write, and the id of a request to settle once written.
    outbox: Vec<(Option<u64>, Value)>,
    /// The connection must be given up, and why.
    abandon: Option<Advice>,
    /// `disconnect()` was called; answer once done.
    stopping: Option<oneshot::Sender<()>>,
    /// The server's `disconnect` frame.
    disconnect: Option<DisconnectFrame>,
    pinging: bool,
    refresh_at: Option<Instant>,
}

impl Driver {
    pub fn new(
        url: String,
        opts: Options,
        token_source: TokenSource,
        commands: mpsc::Receiver<Command>,
        state: watch::Sender<State>,
        events: broadcast::Sender<ClientEvent>,
    ) -> Self {
        let backoff = Backoff::with_random(opts.backoff, opts.jitter);
        let requests = Requests::new(opts.max_queued);
        Self {
            url,
            opts,
            token_source,
            token: None,
            commands,
            state,
            events,
            backoff,
            subs: HashMap::new(),
            next_sub: 1,
            requests,
            generation: 0,
            outbox: Vec::new(),
            abandon: None,
            stopping: None,
            disconnect: None,
            pinging: false,
            refresh_at: None,
        }
    }

    pub async fn run(mut self) {
        let mut next = Next::Connect;
        loop {
            next = match next {
                Next::Connect => self.attempt().await,
                Next::Wait(until) => self.offline(Some(until)).await,
                Next::Stop => self.offline(None).await,
                Next::Exit => return,
            };
        }
    }

    fn emit(&self, event: ClientEvent) {
        // No receivers is fine: nobody is listening.
        let _ = self.events.send(event);
    }

    fn set_state(&self, state: State) {
        self.state.send_if_modified(|s| {
            if *s == state {
                return false;
            }
            *s = state;
            true
        });
    }

    // ---- without a connection ----

    /// Waits until `until` (then connects) or, stopped, for `reconnect()`;
    /// meanwhile serves commands and expires queued requests.
    async fn offline(&mut self, until: Option<Instant>) -> Next {
        loop {
            let deadline = self.requests.next_deadline();
            tokio::select! {
                _ = sleep_until_opt(until) => return Next::Connect,
                cmd = self.commands.recv() => match cmd {
                    None => return Next::Exit,
                    Some(cmd) => {
                        if let Some(next) = self.command_offline(cmd, until.is_none()) {
                            return next;
                        }
                    }
                },
                _ = sleep_until_opt(deadline) => self.expire(),
            }
        }
    }

    /// A command while there is no connection; `Some` changes what the task does.
    fn command_offline(&mut self, cmd: Command, stopped: bool) -> Option<Next> {
        match cmd {
            Command::Request {
                frame,
                waiter,
                timeout,
            } => {
                if stopped {
                    waiter.fail(ClientError::Closed);
                } else if let Err(waiter) = self.requests.queue(frame, waiter, timeout) {
                    waiter.fail(ClientError::QueueFull);
                }
                None
            }
            Command::Subscribe {
                channel,
                options,
                tx,
                reply,
            } => {
                let _ = reply.send(self.add_subscription(channel, options, tx));
                None
            }
            Command::Unsubscribe { channel, sub, done } => {
                self.remove_subscription(&channel, sub);
                if let Some(done) = done {
                    let _ = done.send(());
                }
                None
            }
            Command::Reconnect { done } => {
                let _ = done.send(());
                if stopped {
                    self.backoff.reset();
                    self.set_state(State::Connecting);
                    self.emit(ClientEvent::Connecting {
                        code: 0,
                        reason: "reconnect called".into(),
                        attempt: 0,
                        delay: Duration::ZERO,
                    });
                }
                Some(Next::Connect)
            }
            Command::Disconnect { done } => {
                let next = if stopped {
                    Next::Stop
                } else {
                    self.end(close_code::DISCONNECT_CALLED, "disconnect called")
                };
                let _ = done.send(());
                Some(next)
            }
        }
    }

    /// Opens and authenticates a connection, serving commands meanwhile.
    async fn attempt(&mut self) -> Next {
        self.generation += 1;
        let open = open(
            self.url.clone(),
            self.token_source.clone(),
            self.opts.connect_timeout,
        );
        let mut open = pin!(tokio::time::timeout(self.opts.connect_timeout, open));
        loop {
            let deadline = self.requests.next_deadline();
            tokio::select! {
                opened = &mut open => {
                    return match opened {
                        Ok(Ok(opened)) => self.serve(opened).await,
                        Ok(Err(Failure::Token(why))) => {
                            self.emit(ClientEvent::Error(ClientError::Token(why.clone())));
                            self.lost(Advice::retry(close_code::TOKEN_UNAVAILABLE, &why))
                        }
                        Ok(Err(Failure::Closed { advice, refused })) => {
                            if let Some(e) = refused {
                                self.emit(ClientEvent::Error(e));
                            }
                            self.lost(advice)
                        }
                        Ok(Err(Failure::Fatal(why))) => self.end(close_code::TRANSPORT_CLOSED, &why),
                        Err(_) => self.lost(Advice::retry(close_code::CONNECT_TIMEOUT, "connect timeout")),
                    };
                }
                cmd = self.commands.recv() => match cmd {
                    None => return Next::Exit,
                    Some(Command::Reconnect { done }) => {
                        // Already connecting.
                        let _ = done.send(());
                    }
                    Some(cmd) => {
                        if let Some(next) = self.command_offline(cmd, false) {
                            return next;
                        }
                    }
                },
                _ = sleep_until_opt(deadline) => self.expire(),
            }
        }
    }

    // ---- with a connection ----

    async fn serve(&mut self, opened: Opened) -> Next {
        let Opened {
            mut ws,
            token,
            identity,
        } = opened;
        let generation = self.generation;
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

        let connected_at = Instant::now();
        let mut stable = false;
        let mut last_received = Instant::now();
        let half = (self.opts.ping_interval / 2).max(Duration::from_millis(1));
        let mut liveness = tokio::time::interval_at(Instant::now() + half, half);
        liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refresh: Option<JoinHandle<Result<String, BoxError>>> = None;

        loop {
            if !self.flush(&mut ws).await && self.abandon.is_none() {
                self.abandon = Some(Advice::retry(close_code::TRANSPORT_CLOSED, "write failed"));
            }
            if let Some(done) = self.stopping.take() {
                let bye = async {
                    ws.close(None).await?;
                    // Read to the server's close reply so the goodbye is not lost to a reset.
                    while let Some(Ok(_)) = ws.next().await {}
                    Ok::<(), tungstenite::Error>(())
                };
                let _ = tokio::time::timeout(CLOSE_WAIT, bye).await;
                let next = self.end(close_code::DISCONNECT_CALLED, "disconnect called");
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
                    last_received = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(text))) => self.on_frame(&text, generation),
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            return self.lost(advise(self.disconnect.as_ref(), code, &reason));
                        }
                        Some(Ok(_)) => {} // pings (answered by tungstenite), pongs
                        Some(Err(_)) | None => {
                            return self.lost(advise(
                                self.disconnect.as_ref(),
                                close_code::ABNORMAL,
                                "connection lost",
                            ));
                        }
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None => {
                        let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
                        return Next::Exit;
                    }
                    Some(cmd) => self.command_online(cmd, generation),
                },
                _ = sleep_until_opt(deadline) => self.expire(),
                _ = liveness.tick() => {
                    if !stable && connected_at.elapsed() >= self.opts.stable_after {
                        stable = true;
                        self.backoff.reset();
                    }
                    if !self.pinging && last_received.elapsed() >= self.opts.ping_interval {
                        self.pinging = true;
                        let frame = object(json!({"type": "ping"}));
                        let (_, frame) = self.requests.send_now(frame, Waiter::Ping, self.opts.pong_timeout);
                        self.outbox.push((None, frame));
                    }
                    self.drop_gone_subscriptions();
                }
                _ = tokio::time::sleep(CARE_INTERVAL), if needs_care => self.care_for_subscriptions(generation),
                _ = sleep_until_opt(self.refresh_at), if refresh.is_none() => {
                    self.refresh_at = None;
                    if let TokenSource::Provider(provider) = &self.token_source {
                        refresh = Some(tokio::spawn(provider()));
                    }
                }
                fetched = async { refresh.as_mut().expect("guarded by the condition").await }, if refresh.is_some() => {
                    refresh = None;
                    match fetched {
                        Ok(Ok(token)) if !token.is_empty() => {
                            let frame = object(json!({"type": "refresh", "token": token}));
                            let (_, frame) = self.requests.send_now(frame, Waiter::Refresh { token }, self.opts.request_timeout);
                            self.outbox.push((None, frame));
                        }
                        Ok(Ok(_)) => self.refresh_failed(ClientError::Token("the provider returned no token".into())),
                        Ok(Err(e)) => self.refresh_failed(ClientError::Token(e.to_string())),
                        Err(e) => self.refresh_failed(ClientError::Token(e.to_string())),
                    }
                }
            }
        }
    }

    /// Writes the outbox; false if the socket did not take it in time.
    async fn flush(&mut self, ws: &mut Ws) -> bool {
        if self.outbox.is_empty() {
            return true;
        }
        let frames = std::mem::take(&mut self.outbox);
        let write = async {
            for (_, frame) in &frames {
                ws.feed(Message::text(frame.to_string())).await?;
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

    fn command_online(&mut self, cmd: Command, generation: u64) {
        match cmd {
            Command::Request {
                frame,
                waiter,
                timeout,
            } => {
                let written = matches!(waiter, Waiter::Written(_));
                let (id, frame) = self.requests.send_now(frame, waiter, timeout);
                self.outbox.push((written.then_some(id), frame));
            }
            Command::Subscribe {
                channel,
                options,
                tx,
                reply,
            } => {
                let added = self.add_subscription(channel.clone(), options, tx);
                let ok = added.is_ok();
                let _ = reply.send(added);
                if ok {
                    self.send_subscribe(&channel);
                }
            }
            Command::Unsubscribe { channel, sub, done } => {
                if let Some(entry) = self.remove_subscription(&channel, sub)
                    && (entry.subscribed || entry.pending_on == Some(generation))
                {
                    self.send_unsubscribe(&channel);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::Reconnect { done } => {
                self.abandon = Some(Advice::retry(
                    close_code::RECONNECT_CALLED,
                    "reconnect called",
                ));
                let _ = done.send(());
            }
            Command::Disconnect { done } => self.stopping = Some(done),
        }
    }

    fn on_frame(&mut self, text: &str, generation: u64) {
        let frame = match ServerFrame::parse(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.emit(ClientEvent::Error(ClientError::Protocol(format!(
                    "invalid frame from the server: {e}"
                ))));
                return;
            }
        };
        match frame {
            ServerFrame::Message(p) => self.on_publication(p),
            ServerFrame::Join { channel, info } => {
                self.deliver(&channel, |e| e.presence(SubscriptionEvent::Join(info)))
            }
            ServerFrame::Leave { channel, info } => {
                self.deliver(&channel, |e| e.presence(SubscriptionEvent::Leave(info)))
            }
            ServerFrame::Disconnect {
                code,
                reason,
                reconnect,
            } => {
                self.disconnect = Some(DisconnectFrame {
                    code,
                    reason,
                    reconnect,
                });
            }
            ServerFrame::Response { id: Some(id), data } => self.settle(id, Ok(data), generation),
            ServerFrame::Pong { id: Some(id) }
            | ServerFrame::Authenticated { id: Some(id), .. } => {
                self.settle(id, Ok(Value::Null), generation)
            }
            ServerFrame::Error {
                id: Some(id),
                error,
                code,
            } => self.settle(
                id,
                Err(ClientError::Server {
                    code,
                    message: error,
                }),
                generation,
            ),
            ServerFrame::Error {
                id: None,
                error,
                code,
            } => self.emit(ClientEvent::Error(ClientError::Server {
                code,
                message: error,
            })),
            _ => {}
        }
    }

    fn on_publication(&mut self, p: Publication) {
        if self.subs.contains_key(&p.channel) {
            let channel = p.channel.clone();
            self.deliver(&channel, |e| e.message(p));
        } else {
            // The personal channel, which the server subscribed by itself.
            self.emit(ClientEvent::Message(p));
        }
    }

    /// Hands an event to a subscription; one whose handle is gone is removed.
    fn deliver(&mut self, channel: &str, f: impl FnOnce(&mut Entry) -> Delivery) {
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        if f(entry) == Delivery::Gone {
            self.subs.remove(channel);
            self.send_unsubscribe(channel);
        }
    }

    /// A reply to request `id`.
    fn settle(&mut self, id: u64, result: Result<Value, ClientError>, generation: u64) {
        let Some(req) = self.requests.take(id) else {
            return;
        };
        match req.waiter {
            Waiter::Reply(tx) | Waiter::Written(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Subscribe {
                channel,
                sub,
                was_recovering,
            } => self.subscribe_reply(&channel, sub, was_recovering, result, generation),
            Waiter::Unsubscribe => {}
            Waiter::Ping => self.pinging = false,
            Waiter::Refresh { token } => match result {
                Ok(_) => {
                    self.emit(ClientEvent::Refreshed {
                        expires_at: expiry(&token),
                    });
                    self.token = Some(token);
                    self.refresh_at = self.refresh_time();
                }
                Err(e) => self.refresh_failed(e),
            },
        }
    }

    fn subscribe_reply(
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

    /// Requests whose time is up.
    fn expire(&mut self) {
        for req in self.requests.expired(Instant::now()) {
            match req.waiter {
                Waiter::Reply(tx) | Waiter::Written(tx) => {
                    let _ = tx.send(Err(ClientError::Timeout(req.timeout)));
                }
                Waiter::Subscribe { .. } => {
                    // The server may yet subscribe us; only a new connection
                    // makes the state certain again.
                    self.abandon.get_or_insert_with(|| {
                        Advice::retry(close_code::SUBSCRIBE_TIMEOUT, "subscribe timeout")
                    });
                }
                Waiter::Ping => {
                    self.abandon
                        .get_or_insert_with(|| Advice::retry(close_code::NO_PONG, "no pong"));
                }
                Waiter::Refresh { .. } => self.refresh_failed(ClientError::Timeout(req.timeout)),
                Waiter::Unsubscribe => {}
            }
        }
    }

    fn refresh_failed(&mut self, error: ClientError) {
        self.emit(ClientEvent::Error(error));
        // Keep trying while the old token lasts; if it runs out the server
        // closes with 4003 and the reconnect fetches a new token anyway.
        let retry = self.opts.refresh_margin.min(Duration::from_secs(5));
        self.refresh_at = Some(Instant::now() + retry);
    }

    /// When to renew the current token, if it comes from a provider and expires.
    fn refresh_time(&self) -> Option<Instant> {
        if !matches!(self.token_source, TokenSource::Provider(_)) {
            return None;
        }
        let exp = expiry(self.token.as_deref()?)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let ttl = Duration::from_secs(exp).saturating_sub(now);
        Some(Instant::now() + refresh_delay(ttl, self.opts.refresh_margin))
    }

    // ---- subscriptions ----

    fn add_subscription(
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

    fn remove_subscription(&mut self, channel: &str, sub: u64) -> Option<Entry> {
        if self.subs.get(channel).is_some_and(|e| e.id == sub) {
            self.subs.remove(channel)
        } else {
            None
        }
    }

    fn send_subscribe(&mut self, channel: &str) {
        let generation = self.generation;
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        if entry.pending_on == Some(generation) {
            return;
        }
        let mut frame = object(json!({"type": "subscribe", "channel": channel}));
        if let Some(since) = &entry.position {
            frame.insert("since".into(), json!(since));
        }
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

    fn send_unsubscribe(&mut self, channel: &str) {
        let frame = object(json!({"type": "unsubscribe", "channel": channel}));
        let (_, frame) =
            self.requests
                .send_now(frame, Waiter::Unsubscribe, self.opts.request_timeout);
        self.outbox.push((None, frame));
    }

    /// Retries subscriptions refused for a while, and resumes those that
    /// lagged once their application has caught up: a fresh subscription
    /// from the last publication taken recovers what was dropped.
    fn care_for_subscriptions(&mut self, generation: u64) {
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

    fn drop_gone_subscriptions(&mut self) {
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

    // ---- ends ----

    /// The connection is gone (or never came); reconnect or stop.
    fn lost(&mut self, advice: Advice) -> Next {
        self.outbox.clear();
        self.pinging = false;
        self.refresh_at = None;
        self.disconnect = None;
        for req in self.requests.take_sent() {
            req.waiter.fail(ClientError::ConnectionLost);
        }
        self.all_subscribing(advice.code, &advice.reason);
        // Reconnecting with an expired token nobody can renew earns only a refusal.
        let renewable =
            matches!(self.token_source, TokenSource::Provider(_)) || advice.code != 4003;
        if !(advice.reconnect && renewable) {
            return self.end(advice.code, &advice.reason);
        }
        let delay = if advice.immediate {
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        };
        self.set_state(State::Connecting);
        self.emit(ClientEvent::Connecting {
            code: advice.code,
            reason: advice.reason,
            attempt: self.backoff.attempt(),
            delay,
        });
        Next::Wait(Instant::now() + delay)
    }

    /// Stops for good: `disconnect()`, or a refusal not worth retrying.
    fn end(&mut self, code: u16, reason: &str) -> Next {
        self.outbox.clear();
        self.refresh_at = None;
        for req in self.requests.take_all() {
            req.waiter.fail(ClientError::Closed);
        }
        self.all_subscribing(code, reason);
        self.set_state(State::Disconnected {
            code,
            reason: reason.to_owned(),
        });
        self.emit(ClientEvent::Disconnected {
            code,
            reason: reason.to_owned(),
        });
        Next::Stop
    }

    fn all_subscribing(&mut self, code: u16, reason: &str) {
        self.subs
            .retain(|_, e| e.subscribing(code, reason) != Delivery::Gone);
    }
}

/// Fetches a token, opens the socket and authenticates.
async fn open(url: String, source: TokenSource, timeout: Duration) -> Result<Opened, Failure> {
    let token = match source {
        TokenSource::Anonymous => None,
        TokenSource::Fixed(token) => Some(token),
        TokenSource::Provider(provider) => match provider().await {
            Ok(token) if !token.is_empty() => Some(token),
            Ok(_) => return Err(Failure::Token("the provider returned no token".into())),
            Err(e) => return Err(Failure::Token(e.to_string())),
        },
    };
    let (mut ws, _) = connect_async(url.as_str()).await.map_err(|e| match e {
        tungstenite::Error::Url(why) => Failure::Fatal(format!("cannot connect to {url}: {why}")),
        other => Failure::Closed {
            advice: Advice::retry(close_code::ABNORMAL, &other.to_string()),
            refused: None,
        },
    })?;
    let identity = match &token {
        None => None,
        Some(token) => Some(authenticate(&mut ws, token, timeout).await?),
    };
    Ok(Opened {
        ws,
        token,
        identity,
    })
}

/// Sends `auth` and reads to its answer: `authenticated`, or a refusal
/// followed by the server's `disconnect` and close.
async fn authenticate(
    ws: &mut Ws,
    token: &str,
    timeout: Duration,
) -> Result<(String, String), Failure> {
    let auth = json!({"type": "auth", "id": AUTH_ID, "token": token});
    let lost = |why: &str| Failure::Closed {
        advice: Advice::retry(close_code::ABNORMAL, why),
        refused: None,
    };
    tokio::time::timeout(timeout, ws.send(Message::text(auth.to_string())))
        .await
        .map_err(|_| lost("auth not sent"))?
        .map_err(|e| lost(&e.to_string()))?;
    let mut refused = None;
    let mut disconnect = None;
    loop {
        let (code, reason) = match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                match ServerFrame::parse(&text) {
                    Ok(ServerFrame::Authenticated {
                        id: Some(AUTH_ID),
                        user_id,
                        client_id,
                    }) => return Ok((client_id, user_id)),
                    Ok(ServerFrame::Error {
                        id: Some(AUTH_ID),
                        error,
                        code,
                    }) => {
                        refused = Some(ClientError::Server {
                            code,
                            message: error,
                        })
                    }
                    Ok(ServerFrame::Disconnect {
                        code,
                        reason,
                        reconnect,
                    }) => {
                        disconnect = Some(DisconnectFrame {
                            code,
                            reason,
                            reconnect,
                        })
                    }
                    _ => {}
                }
                continue;
            }
            Some(Ok(Message::Close(frame))) => frame
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((1005, String::new())),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => (close_code::ABNORMAL, "connection lost".to_owned()),
        };
        return Err(Failure::Closed {
            advice: advise(disconnect.as_ref(), code, &reason),
            refused,
        });
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
