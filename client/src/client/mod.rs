//! The application's handle: configure with [`ClientBuilder`], then send
//! requests and subscribe. A background task (the [`crate::connection`])
//! owns the socket; the handle talks to it through a bounded queue.

use std::{future::Future, sync::Arc, time::Duration};

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use serde_json::{Map, Value};
use switchboard_core::frame::RequestFrame;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

mod subscription;

pub use subscription::Subscription;

use crate::{
    backoff::BackoffConfig,
    connection::{Command, Driver},
    error::ClientError,
    event::{ClientEvent, State},
    frame::{self, ClientInfo, History, HistoryOptions, Position, PresenceStats, presence_page},
    options::Options,
    request::Waiter,
    subscription::SubscribeOptions,
    token::{BoxError, TokenSource},
};

/// Configures and starts a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    url: String,
    token: TokenSource,
    options: Options,
}

impl ClientBuilder {
    /// Connect with this token (a JWT). Without a token or provider the
    /// client is anonymous.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = TokenSource::Fixed(token.into());
        self
    }

    /// Fetch a token before every connection attempt and before the current
    /// one expires (then sent as `refresh` on the live connection).
    pub fn token_provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.token = TokenSource::Provider(Arc::new(move || {
            let fut = provider();
            Box::pin(async move { fut.await.map_err(Into::into) })
        }));
        self
    }

    /// Reply timeout of requests, waiting for a connection included (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = timeout;
        self
    }

    /// Time to open and authenticate a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// A socket write that takes longer ends the connection (default 10 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.options.write_timeout = timeout;
        self
    }

    /// Ping after this much silence from the server (default 20 s).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.options.ping_interval = interval;
        self
    }

    /// A ping unanswered this long means the connection is dead (default 10 s).
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.options.pong_timeout = timeout;
        self
    }

    /// A connection up this long resets the backoff (default 10 s).
    pub fn stable_after(mut self, after: Duration) -> Self {
        self.options.stable_after = after;
        self
    }

    /// Renew the token this long before it expires, at most a fifth of its
    /// lifetime (default 30 s).
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.options.refresh_margin = margin;
        self
    }

    /// Most requests waiting for a connection (default 1024).
    pub fn max_queued(mut self, max: usize) -> Self {
        self.options.max_queued = max.max(1);
        self
    }

    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.options.backoff = backoff;
        self
    }

    /// Trust `root` for `wss://`, besides Mozilla's roots (see
    /// [`Self::only_added_roots`]). Read a PEM file with
    /// `CertificateDer::pem_file_iter` ([`crate::PemObject`]).
    pub fn add_root_certificate(mut self, root: CertificateDer<'static>) -> Self {
        self.options.tls.extra_roots.push(root);
        self
    }

    /// Trust only the roots given with [`Self::add_root_certificate`].
    pub fn only_added_roots(mut self) -> Self {
        self.options.tls.only_extra_roots = true;
        self
    }

    /// This rustls configuration for `wss://`, instead of one made from
    /// the roots (client certificates, a custom verifier).
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.options.tls.config = Some(config);
        self
    }

    /// Whether to offer the `switchboard.batch` subprotocol (default on):
    /// the server then packs every message that is ready into one frame,
    /// and this client sends its queued requests in one frame, which
    /// costs both ends less per message. Off, it speaks one message per
    /// frame; so does a server that does not know batching, either way.
    pub fn batch_frames(mut self, on: bool) -> Self {
        self.options.batch = on;
        self
    }

    /// The jitter source, in `[0, 1)` (default: random). Tests pin it.
    pub fn jitter(mut self, jitter: fn() -> f64) -> Self {
        self.options.jitter = jitter;
        self
    }

    /// Starts the client: it connects now and reconnects by itself from
    /// then on. Must be called within a Tokio runtime.
    pub fn connect(self) -> Client {
        let (commands_tx, commands_rx) = mpsc::channel(self.options.max_queued);
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let (events, _) = broadcast::channel(256);
        let request_timeout = self.options.request_timeout;
        let driver = Driver::new(
            self.url,
            self.options,
            self.token,
            commands_rx,
            state_tx,
            events.clone(),
        );
        tokio::spawn(driver.run());
        Client {
            shared: Arc::new(Shared {
                commands: commands_tx,
                state: state_rx,
                events,
                request_timeout,
            }),
        }
    }
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<State>,
    events: broadcast::Sender<ClientEvent>,
    request_timeout: Duration,
}

/// A Switchboard client. Cheap to clone; the connection lives as long as
/// any clone or [`Subscription`] does.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// A builder for `url` (`ws://host:port/ws`, or `wss://` for TLS).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            token: TokenSource::Anonymous,
            options: Options::default(),
        }
    }

    pub fn state(&self) -> State {
        self.shared.state.borrow().clone()
    }

    /// Every state change, latest value first.
    pub fn states(&self) -> watch::Receiver<State> {
        self.shared.state.clone()
    }

    /// Events from now on. The buffer is bounded (256): a receiver that falls
    /// behind misses the oldest, which [`broadcast::Receiver::recv`] reports.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    /// Waits until connected; fails if the client stops first. Returns the
    /// client id (set when connected with a token) and the user id.
    pub async fn connected(&self) -> Result<(Option<String>, String), ClientError> {
        let mut states = self.shared.state.clone();
        loop {
            match &*states.borrow_and_update() {
                State::Connected { client_id, user_id } => {
                    return Ok((client_id.clone(), user_id.clone()));
                }
                State::Disconnected { .. } => return Err(ClientError::Closed),
                State::Connecting => {}
            }
            states.changed().await.map_err(|_| ClientError::Closed)?;
        }
    }

    /// Closes the connection and stops reconnecting. Subscriptions are kept
    /// and resume after [`Client::reconnect`].
    pub async fn disconnect(&self) {
        let (done, wait) = oneshot::channel();
        if self.command(Command::Disconnect { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Drops the current connection as a network failure would; the client
    /// reconnects with backoff and resubscribes with recovery. After
    /// `disconnect()`, starts connecting again.
    pub async fn reconnect(&self) {
        let (done, wait) = oneshot::channel();
        if self.command(Command::Reconnect { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Subscribes to `channel`, now or once connected, and again after every
    /// reconnect from the last publication delivered.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, ClientError> {
        self.subscribe_with(channel, SubscribeOptions::default())
            .await
    }

    pub async fn subscribe_with(
        &self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        let (tx, rx) = mpsc::channel(options.capacity.max(1));
        let (reply, id) = oneshot::channel();
        self.command(Command::Subscribe {
            channel: channel.to_owned(),
            options,
            tx,
            reply,
        })
        .await?;
        let id = id.await.map_err(|_| ClientError::Closed)??;
        Ok(Subscription::new(channel.to_owned(), id, rx, self.clone()))
    }

    pub(crate) async fn unsubscribe(&self, channel: &str, sub: u64) {
        let (done, wait) = oneshot::channel();
        let cmd = Command::Unsubscribe {
            channel: channel.to_owned(),
            sub,
            done: Some(done),
        };
        if self.command(cmd).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub(crate) fn unsubscribe_soon(&self, channel: &str, sub: u64) {
        let _ = self.shared.commands.try_send(Command::Unsubscribe {
            channel: channel.to_owned(),
            sub,
            done: None,
        });
    }

    /// Publishes `data` and waits for the server's acknowledgement: the
    /// publication's position.
    pub async fn publish(
        &self,
        channel: &str,
        data: impl Serialize,
    ) -> Result<Position, ClientError> {
        let data = self.call(frame::publish(channel, data)?).await?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Publishes without acknowledgement: returns once the frame is written.
    /// A refusal arrives later as [`ClientEvent::Error`].
    pub async fn publish_no_ack(
        &self,
        channel: &str,
        data: impl Serialize,
    ) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Request {
            frame: frame::publish(channel, data)?,
            waiter: Waiter::Written(tx),
            timeout: self.shared.request_timeout,
        })
        .await?;
        rx.await.map_err(|_| ClientError::Closed)?.map(|_| ())
    }

    /// Every client in the channel's presence, read page by page.
    pub async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, ClientError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let data = self
                .call(frame::request(&RequestFrame::Presence {
                    channel,
                    cursor: cursor.as_deref(),
                    limit: None,
                }))
                .await?;
            let (clients, next) =
                presence_page(data).map_err(|e| ClientError::Protocol(e.to_string()))?;
            all.extend(clients);
            match next {
                // A server that repeats a cursor would loop forever.
                Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
                _ => return Ok(all),
            }
        }
    }

    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, ClientError> {
        let data = self
            .call(frame::request(&RequestFrame::PresenceStats { channel }))
            .await?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn history(
        &self,
        channel: &str,
        options: HistoryOptions,
    ) -> Result<History, ClientError> {
        let frame = frame::request(&RequestFrame::History {
            channel,
            limit: options.limit,
            reverse: options.reverse,
            since: options.since.as_ref(),
        });
        let data = self.call(frame).await?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = tokio::time::Instant::now();
        self.call(frame::request(&RequestFrame::Ping)).await?;
        Ok(start.elapsed())
    }

    /// Any request (a JSON object with `type`, without `id`); returns the
    /// reply's `data` (`null` for `pong`).
    pub async fn request(&self, frame: Value) -> Result<Value, ClientError> {
        match frame {
            Value::Object(frame) => self.call(frame).await,
            other => Err(ClientError::Protocol(format!(
                "a request must be a JSON object, not {other}"
            ))),
        }
    }

    async fn call(&self, frame: Map<String, Value>) -> Result<Value, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Request {
            frame,
            waiter: Waiter::Reply(tx),
            timeout: self.shared.request_timeout,
        })
        .await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.shared
            .commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)
    }
}
