//! The connection task: one WebSocket at a time, opened, authenticated,
//! watched for silence, and replaced with backoff when it fails. It owns
//! the subscriptions and the requests, so that both outlive sockets.
//!
//! The task is one [`Driver`]; its parts live in one file each, so that
//! each of the task's concerns can be read on its own:
//!
//! - this file: the driver's state, its loop between offline, connecting
//!   and connected, and the two ends (reconnect or stop).
//! - [`command`]: what the application asks, offline and online.
//! - [`handshake`]: opening a socket and authenticating it.
//! - [`session`]: one open connection, served until it ends.
//! - [`inbox`]: each server frame handed to a subscription, a waiting
//!   request or the application; requests whose time ran out.
//! - [`subscriptions`]: the task's subscription table and its requests.
//! - [`renewal`]: renewing the token before it expires.

mod command;
mod handshake;
mod inbox;
mod renewal;
mod session;
mod subscriptions;

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::Value;
use tokio::{
    net::TcpStream,
    sync::{broadcast, mpsc, oneshot, watch},
    time::{Instant, sleep_until},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) use self::command::Command;
use crate::{
    advice::{Advice, DisconnectFrame},
    backoff::Backoff,
    error::ClientError,
    event::{ClientEvent, State},
    options::Options,
    request::Requests,
    subscription::Entry,
    token::TokenSource,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the task does next.
enum Next {
    Connect,
    Wait(Instant),
    /// Stopped: requests fail at once until `reconnect()`.
    Stop,
    /// Every handle is gone.
    Exit,
}

pub(crate) struct Driver {
    url: String,
    opts: Options,
    /// Made once: every `wss://` attempt shares it (and its session cache).
    tls: Arc<rustls::ClientConfig>,
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
    /// The connection speaks `switchboard.batch`.
    batch: bool,
}

impl Driver {
    pub(crate) fn new(
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
            tls: opts.tls.client_config(),
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
            batch: false,
        }
    }

    pub(crate) async fn run(mut self) {
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
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
