//! One client's protocol state: who it is, what it subscribed to, its rate
//! budget, and how each request is carried out against the broker. The
//! connection task ([`crate::connection`]) owns the socket and drives this.
//!
//! - `inflight`: the order of a connection's requests (sans-IO): one
//!   lane per channel, so that channels proceed independently.
//! - `pipeline`: requests in flight, started from their lanes and
//!   completed in any order.
//! - `membership`: subscribe, unsubscribe and publish.
//! - `reads`: presence, presence stats and history requests.

mod inflight;
mod membership;
mod pipeline;
mod reads;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Instant, SystemTime},
};

use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_core::{
    Broker, ChannelName, ClientInfo, DeliveryKind, NamespaceOptions,
    frame::{
        Request, parse, push,
        reply::{self, Empty},
    },
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{AuthError, Identity},
    channel_quota::ChannelQuota,
    error::{Disconnect, RequestError},
    gateway::Gateway,
    hub::{ConnHandle, ConnId, Outgoing},
    rate_limit::TokenBucket,
    telemetry,
};

use self::pipeline::{Flight, channel_of};

/// A reply to request `id`, encoded for this connection.
fn respond<R: Serialize>(id: Option<&RawValue>, data: R) -> Utf8Bytes {
    Utf8Bytes::from(reply::response(id, data))
}

/// What the connection must do after a frame was handled.
#[derive(Debug, Default)]
pub struct Step {
    /// Frames to send, in order.
    pub frames: Vec<Utf8Bytes>,
    /// End the connection after sending `frames`.
    pub close: Option<Disconnect>,
}

impl Step {
    fn frame(frame: Utf8Bytes) -> Self {
        Self {
            frames: vec![frame],
            close: None,
        }
    }

    fn error(id: Option<&RawValue>, e: &RequestError) -> Self {
        telemetry::error(e.label(), e.code());
        Self::frame(e.frame(id))
    }

    fn fatal(id: Option<&RawValue>, e: &RequestError, close: Disconnect) -> Self {
        telemetry::error(e.label(), e.code());
        Self {
            frames: vec![e.frame(id)],
            close: Some(close),
        }
    }
}

/// Where a connection stands with authentication.
#[derive(Debug)]
pub enum AuthState {
    /// No token yet: the first frame decides (an `auth`, or anonymous use).
    Pending,
    Authenticated(Identity),
}

struct Subscription {
    /// The last offset delivered (or covered by the subscribe reply); later
    /// deliveries at or below it are duplicates and dropped.
    last_offset: u64,
    in_presence: bool,
}

pub struct Session<B: Broker> {
    gateway: Arc<Gateway<B>>,
    conn: ConnId,
    client_id: String,
    /// The outbound queue's sending side, made at the first subscription:
    /// an idle connection holds no queue (it was most of an idle
    /// connection's memory, docs/benchmarks.md).
    queue: Option<mpsc::Sender<Arc<Outgoing>>>,
    /// The receiving side of a queue just made, for the connection to take.
    made: Option<mpsc::Receiver<Arc<Outgoing>>>,
    /// The connection's stop token, cancelled when its queue overflows.
    overflow: CancellationToken,
    pub auth: AuthState,
    /// Looked up for every delivery written to this connection: hashed
    /// with foldhash rather than SipHash, which cost more than the lookup.
    /// (A client can only collide its own keys, at most
    /// `max_channels_per_connection` of them.)
    subs: HashMap<ChannelName, Subscription, foldhash::fast::RandomState>,
    bucket: TokenBucket,
    channel_quota: ChannelQuota,
    /// Requests in flight; made on the first request, so that a
    /// connection that never asks holds none of it.
    flight: Option<Box<Flight>>,
    /// Subscribes running: counted against `max_channels_per_connection`.
    joining: usize,
}

impl<B: Broker> Session<B> {
    pub fn new(
        gateway: Arc<Gateway<B>>,
        conn: ConnId,
        client_id: String,
        overflow: CancellationToken,
    ) -> Self {
        let limits = &gateway.settings.gateway.limits;
        let bucket = TokenBucket::new(limits.rate_per_second, limits.rate_burst, Instant::now());
        let channel_quota = ChannelQuota::new(
            limits.max_channels_per_interval,
            limits.channel_quota_interval,
            Instant::now(),
        );
        Self {
            gateway,
            conn,
            client_id,
            queue: None,
            made: None,
            overflow,
            auth: AuthState::Pending,
            subs: HashMap::default(),
            bucket,
            channel_quota,
            flight: None,
            joining: 0,
        }
    }

    /// How the hub reaches this connection; makes its queue the first time.
    fn handle(&mut self) -> ConnHandle {
        let made = &mut self.made;
        let capacity = self.gateway.settings.gateway.limits.outbound_queue.max(1);
        let tx = self.queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(capacity);
            *made = Some(rx);
            tx
        });
        ConnHandle {
            tx: tx.clone(),
            overflow: self.overflow.clone(),
        }
    }

    /// The receiving side of the queue, once, when it has just been made.
    pub fn take_queue(&mut self) -> Option<mpsc::Receiver<Arc<Outgoing>>> {
        self.made.take()
    }

    /// When the current token expires, if it does.
    pub fn expires_at(&self) -> Option<SystemTime> {
        match &self.auth {
            AuthState::Authenticated(id) => id.expires_at,
            AuthState::Pending => None,
        }
    }

    /// Whether the connection still waits for an `auth` it must send.
    pub fn awaiting_auth(&self) -> bool {
        matches!(self.auth, AuthState::Pending) && !self.gateway.auth.allow_anonymous
    }

    /// Applies a token checked during the handshake.
    pub async fn start(&mut self, token: Option<Result<Identity, AuthError>>) -> Step {
        match token {
            None => Step::default(),
            Some(Ok(identity)) => self.authenticate(None, identity).await,
            Some(Err(e)) => Step::fatal(None, &RequestError::from(e), Disconnect::Unauthorized),
        }
    }

    /// Handles one text frame from the client.
    pub async fn handle_text(&mut self, text: &str) -> Step {
        telemetry::received();
        let incoming = match parse::parse(text) {
            Ok(incoming) => incoming,
            Err(rejected) => {
                if !self.bucket.try_take(Instant::now()) {
                    return self.rate_limited(rejected.id);
                }
                return Step::error(rejected.id, &RequestError::from(rejected.error));
            }
        };
        let id = incoming.id;
        if !self.bucket.try_take(Instant::now()) {
            return self.rate_limited(id);
        }
        if let AuthState::Pending = self.auth {
            match incoming.request {
                Request::Auth { token } => {
                    return match self.gateway.auth.verify(&token) {
                        Ok(identity) => self.authenticate(id, identity).await,
                        Err(e) => Step::fatal(id, &RequestError::from(e), Disconnect::Unauthorized),
                    };
                }
                _ if self.gateway.auth.allow_anonymous => {
                    self.auth = AuthState::Authenticated(Identity::anonymous());
                }
                _ => {
                    return Step::fatal(
                        id,
                        &RequestError::from(AuthError::Required),
                        Disconnect::Unauthorized,
                    );
                }
            }
        }
        if let Some(channel) = channel_of(&incoming.request).cloned() {
            return self.dispatch(text, id, &channel, incoming.request);
        }
        match self.request(id, incoming.request) {
            Ok(frame) => Step::frame(frame),
            Err(e) => Step::error(id, &e),
        }
    }

    fn rate_limited(&self, id: Option<&RawValue>) -> Step {
        if self.gateway.settings.gateway.limits.close_on_rate_limit {
            Step::fatal(id, &RequestError::RateLimited, Disconnect::RateLimited)
        } else {
            Step::error(id, &RequestError::RateLimited)
        }
    }

    async fn authenticate(&mut self, id: Option<&RawValue>, identity: Identity) -> Step {
        let user = identity.user_id.clone();
        let info = identity.info.clone();
        self.auth = AuthState::Authenticated(identity);
        let mut step = Step::frame(Utf8Bytes::from(reply::authenticated(
            id,
            &user,
            &self.client_id,
        )));
        let personal = &self.gateway.settings.namespaces.personal;
        if personal.enabled {
            // User ids that cannot form a channel name simply get no
            // personal channel; they are still valid users.
            if let Ok(channel) = ChannelName::personal(&user) {
                let client = ClientInfo {
                    client_id: self.client_id.clone(),
                    user_id: user,
                    info,
                };
                // Before any request is read: nothing runs beside it.
                let mut joined = Step::default();
                let call = self.join(None, channel, None, Some(client));
                self.join_now(call, &mut joined).await;
                if !self.subs.keys().any(ChannelName::is_personal) {
                    let error = joined.frames.first().map(Utf8Bytes::as_str);
                    tracing::warn!(client = %self.client_id, error = ?error, "personal channel unavailable");
                    step.frames.append(&mut joined.frames);
                }
            }
        }
        step
    }

    fn identity(&self) -> &Identity {
        match &self.auth {
            AuthState::Authenticated(id) => id,
            // Requests are only carried out once authentication settled.
            AuthState::Pending => unreachable!("request before authentication"),
        }
    }

    /// Checks that this connection may use `channel`; returns its options.
    fn access(
        &self,
        channel: &ChannelName,
        publish: bool,
    ) -> Result<NamespaceOptions, RequestError> {
        let options = self.gateway.settings.namespaces.options(channel)?;
        let identity = self.identity();
        if !identity.claim_allows(channel, options.require_claim) {
            return Err(RequestError::PermissionDenied);
        }
        if publish && (!options.allow_publish || (channel.is_personal() && identity.is_anonymous()))
        {
            return Err(RequestError::PermissionDenied);
        }
        Ok(options)
    }

    /// Reading a personal channel (its history, its client list) is for
    /// its user only; others may publish to it and ask whether it is online.
    fn own_personal(&self, channel: &ChannelName) -> Result<(), RequestError> {
        match channel.personal_user() {
            Some(user) if user != self.identity().user_id => Err(RequestError::PermissionDenied),
            _ => Ok(()),
        }
    }

    /// Answers a request that names no channel, at once.
    fn request(
        &mut self,
        id: Option<&RawValue>,
        request: Request<'_>,
    ) -> Result<Utf8Bytes, RequestError> {
        match request {
            Request::Ping => Ok(Utf8Bytes::from(reply::pong(id))),
            Request::Auth { .. } => Err(RequestError::AlreadyAuthenticated),
            Request::Refresh { token } => self.refresh(id, &token),
            _ => unreachable!("requests on a channel are dispatched to its lane"),
        }
    }

    /// A new token for the same user; it moves the connection's expiry.
    fn refresh(&mut self, id: Option<&RawValue>, token: &str) -> Result<Utf8Bytes, RequestError> {
        let identity = self
            .gateway
            .auth
            .verify(token)
            .map_err(RequestError::from)?;
        if self.identity().is_anonymous() || identity.user_id != self.identity().user_id {
            return Err(AuthError::OtherUser.into());
        }
        self.auth = AuthState::Authenticated(identity);
        Ok(respond(id, Empty {}))
    }

    /// Whether a queued delivery should be written: it must be for a
    /// channel this connection is subscribed to and, for publications,
    /// newer than what the connection already has.
    pub fn accept(&mut self, out: &Arc<Outgoing>) -> bool {
        self.hold_or_pass(out) && self.admit_delivery(out)
    }

    fn admit_delivery(&mut self, out: &Outgoing) -> bool {
        let Some(sub) = self.subs.get_mut(&out.channel) else {
            return false;
        };
        match out.kind {
            DeliveryKind::Event => true,
            // Commands for the connection itself, applied by it.
            DeliveryKind::Control => false,
            DeliveryKind::Publication { offset } if offset > sub.last_offset => {
                sub.last_offset = offset;
                true
            }
            DeliveryKind::Publication { .. } => false,
            DeliveryKind::Reset { offset } => {
                sub.last_offset = offset;
                true
            }
        }
    }

    /// Ends a subscription because a backend asked (server API); returns
    /// the `unsubscribed` notice for the client, if it was subscribed.
    /// Personal channels are never ended this way: they carry the commands.
    pub async fn server_unsubscribe(&mut self, channel: &ChannelName) -> Option<Utf8Bytes> {
        if channel.is_personal() {
            return None;
        }
        self.leave(channel)?.await;
        Some(Utf8Bytes::from(push::unsubscribed(channel)))
    }

    /// Ends every subscription; called once when the connection closes.
    pub async fn close(&mut self) {
        self.finish_calls().await;
        let channels: Vec<ChannelName> = self.subs.keys().cloned().collect();
        for channel in channels {
            if let Some(leave) = self.leave(&channel) {
                leave.await;
            }
        }
    }
}
