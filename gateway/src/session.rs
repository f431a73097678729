//! One client's protocol state: who it is, what it subscribed to, its rate
//! budget, and how each request is carried out against the broker. The
//! connection task ([`crate::connection`]) owns the socket and drives this.
//!
//! - `reads`: presence, presence stats and history requests.

mod reads;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Instant, SystemTime},
};

use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_core::{
    Broker, ChannelName, ClientInfo, DeliveryKind, NamespaceOptions, Position, PublishRequest,
    SubscribeRequest,
    frame::{
        Request, parse, push,
        reply::{self, Empty, Publications, PublishData, SubscribeData},
    },
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::{
    auth::{AuthError, Identity},
    channel_quota::ChannelQuota,
    error::{Disconnect, RequestError},
    gateway::Gateway,
    hub::{ConnHandle, ConnId, Outgoing},
    rate_limit::TokenBucket,
    telemetry,
};

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
    handle: ConnHandle,
    pub auth: AuthState,
    /// Looked up for every delivery written to this connection: hashed
    /// with foldhash rather than SipHash, which cost more than the lookup.
    /// (A client can only collide its own keys, at most
    /// `max_channels_per_connection` of them.)
    subs: HashMap<ChannelName, Subscription, foldhash::fast::RandomState>,
    bucket: TokenBucket,
    channel_quota: ChannelQuota,
}

impl<B: Broker> Session<B> {
    pub fn new(
        gateway: Arc<Gateway<B>>,
        conn: ConnId,
        client_id: String,
        handle: ConnHandle,
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
            handle,
            auth: AuthState::Pending,
            subs: HashMap::default(),
            bucket,
            channel_quota,
        }
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
        match self.request(id, incoming.request).await {
            Ok(Some(frame)) => Step::frame(frame),
            Ok(None) => Step::default(),
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
                if let Err(e) = self.join(None, channel, None, Some(client)).await {
                    tracing::warn!(client = %self.client_id, error = %e, "personal channel unavailable");
                    step.frames.push(e.frame(None));
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

    /// Carries out one request of an authenticated connection. A flat
    /// match: each request's rules live in its own method below.
    async fn request(
        &mut self,
        id: Option<&RawValue>,
        request: Request<'_>,
    ) -> Result<Option<Utf8Bytes>, RequestError> {
        match request {
            Request::Ping => Ok(Some(Utf8Bytes::from(reply::pong(id)))),
            Request::Auth { .. } => Err(RequestError::AlreadyAuthenticated),
            Request::Refresh { token } => self.refresh(id, &token),
            Request::Subscribe { channel, since } => self.subscribe(id, channel, since).await,
            Request::Unsubscribe { channel } => self.unsubscribe(id, channel).await,
            Request::Publish { channel, data } => self.publish(id, channel, data).await,
            Request::Presence {
                channel,
                cursor,
                limit,
            } => self.presence(id, channel, cursor, limit).await,
            Request::PresenceStats { channel } => self.presence_stats(id, channel).await,
            Request::History {
                channel,
                since,
                limit,
                reverse,
            } => self.history(id, channel, since, limit, reverse).await,
        }
    }

    /// A new token for the same user; it moves the connection's expiry.
    fn refresh(
        &mut self,
        id: Option<&RawValue>,
        token: &str,
    ) -> Result<Option<Utf8Bytes>, RequestError> {
        let identity = self
            .gateway
            .auth
            .verify(token)
            .map_err(RequestError::from)?;
        if self.identity().is_anonymous() || identity.user_id != self.identity().user_id {
            return Err(AuthError::OtherUser.into());
        }
        self.auth = AuthState::Authenticated(identity);
        Ok(Some(respond(id, Empty {})))
    }

    async fn subscribe(
        &mut self,
        id: Option<&RawValue>,
        channel: ChannelName,
        since: Option<Position>,
    ) -> Result<Option<Utf8Bytes>, RequestError> {
        if channel.is_personal() {
            return Err(RequestError::PermissionDenied);
        }
        if self.subs.contains_key(&channel) {
            return Err(RequestError::AlreadySubscribed);
        }
        let max = self
            .gateway
            .settings
            .gateway
            .limits
            .max_channels_per_connection;
        if self.subs.keys().filter(|c| !c.is_personal()).count() >= max {
            return Err(RequestError::TooManyChannels(max));
        }
        let options = self.access(&channel, false)?;
        self.channel_quota.admit(&channel, Instant::now())?;
        let client = options.presence.then(|| ClientInfo {
            client_id: self.client_id.clone(),
            user_id: self.identity().user_id.clone(),
            info: self.identity().info.clone(),
        });
        Ok(Some(self.join(id, channel, since, client).await?))
    }

    async fn unsubscribe(
        &mut self,
        id: Option<&RawValue>,
        channel: ChannelName,
    ) -> Result<Option<Utf8Bytes>, RequestError> {
        if channel.is_personal() {
            return Err(RequestError::PermissionDenied);
        }
        if !self.subs.contains_key(&channel) {
            return Err(RequestError::NotSubscribed);
        }
        self.leave(&channel).await;
        Ok(Some(respond(id, Empty {})))
    }

    /// Publishes as this connection's user; only a request with an id
    /// gets a reply.
    async fn publish(
        &mut self,
        id: Option<&RawValue>,
        channel: ChannelName,
        data: &RawValue,
    ) -> Result<Option<Utf8Bytes>, RequestError> {
        let options = self.access(&channel, true)?;
        if options.publish_requires_subscription && !self.subs.contains_key(&channel) {
            return Err(RequestError::NotSubscribed);
        }
        self.channel_quota.admit(&channel, Instant::now())?;
        let position = self
            .gateway
            .broker
            .publish(PublishRequest {
                channel,
                from: self.identity().user_id.clone(),
                data: data.to_owned(),
                idempotency_key: None,
            })
            .await?;
        Ok(id.map(|id| {
            respond(
                Some(id),
                PublishData {
                    offset: position.offset,
                    epoch: &position.epoch,
                },
            )
        }))
    }

    /// Subscribes this connection and returns the subscribe reply frame.
    async fn join(
        &mut self,
        id: Option<&RawValue>,
        channel: ChannelName,
        since: Option<Position>,
        client: Option<ClientInfo>,
    ) -> Result<Utf8Bytes, RequestError> {
        let in_presence = client.is_some();
        let req = SubscribeRequest {
            gateway: self.gateway.hub.gateway().clone(),
            channel: channel.clone(),
            since,
            client,
        };
        let mut reply = self
            .gateway
            .hub
            .subscribe(&self.gateway.broker, self.conn, self.handle.clone(), req)
            .await?;
        let max = self.gateway.settings.gateway.limits.max_history_reply;
        if reply.publications.len() > max {
            // Keep the newest, which meet the live stream without a gap, and
            // say that the answer is not complete.
            reply.publications.drain(..reply.publications.len() - max);
            reply.recovered = Some(false);
        }
        self.subs.insert(
            channel.clone(),
            Subscription {
                last_offset: reply.position.offset,
                in_presence,
            },
        );
        telemetry::subscriptions(1.0);
        Ok(respond(
            id,
            SubscribeData {
                channel: channel.as_str(),
                offset: reply.position.offset,
                epoch: &reply.position.epoch,
                recoverable: reply.recoverable,
                recovered: reply.recovered,
                publications: reply.recovered.map(|_| Publications(&reply.publications)),
                join_leave: reply.join_leave,
            },
        ))
    }

    async fn leave(&mut self, channel: &ChannelName) {
        let Some(sub) = self.subs.remove(channel) else {
            return;
        };
        telemetry::subscriptions(-1.0);
        let gateway = &self.gateway;
        if sub.in_presence
            && let Err(e) = gateway.broker.leave(channel, &self.client_id).await
        {
            tracing::warn!(channel = %channel, error = %e, "presence leave failed");
        }
        gateway
            .hub
            .unsubscribe(&gateway.broker, self.conn, channel)
            .await;
    }

    /// Whether a queued delivery should be written: it must be for a
    /// channel this connection is subscribed to and, for publications,
    /// newer than what the connection already has.
    pub fn accept(&mut self, out: &Outgoing) -> bool {
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
        if channel.is_personal() || !self.subs.contains_key(channel) {
            return None;
        }
        self.leave(channel).await;
        Some(Utf8Bytes::from(push::unsubscribed(channel)))
    }

    /// Ends every subscription; called once when the connection closes.
    pub async fn close(&mut self) {
        let channels: Vec<ChannelName> = self.subs.keys().cloned().collect();
        for channel in channels {
            self.leave(&channel).await;
        }
    }
}
