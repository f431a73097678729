//! One Pusher connection's protocol state: its app, its socket id, its
//! channels (with each presence channel's members), who it signed in as,
//! and how each client frame is carried out against the broker. The door
//! ([`crate::pusher::door`]) owns the socket and drives this.

use std::{collections::HashMap, sync::Arc, time::Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_core::{
    Broker, ChannelName, ClientInfo, DeliveryKind, PresenceRequest, PublishRequest,
    SubscribeRequest, frame::data,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::{
    channel_quota::ChannelQuota,
    config::PusherApp,
    gateway::Gateway,
    hub::{ConnHandle, ConnId, Outgoing},
    pusher::{
        cache,
        channel::{ChannelKind, PusherChannel},
        close::Close,
        frame::{self, ClientFrame, Envelope, NativeFrame, Subscribe},
        members::{Change, Roster},
        signature,
        subscription_error::Refusal,
        user::{UserData, UserId, on_user_channel, user_channel},
    },
    rate_limit::TokenBucket,
    telemetry,
};

/// Longest client event name, in bytes (Pusher's limit).
const MAX_EVENT_NAME: usize = 200;

/// Longest presence `user_id`, in bytes (Pusher's limit).
const MAX_USER_ID: usize = 128;

/// What the door must do after a frame.
#[derive(Debug, Default)]
pub struct Reply {
    pub frames: Vec<Utf8Bytes>,
    pub close: Option<Close>,
}

impl Reply {
    pub fn frame(frame: Utf8Bytes) -> Self {
        Self {
            frames: vec![frame],
            close: None,
        }
    }

    fn error(message: &str) -> Self {
        telemetry::error("pusher_error", 0);
        Self::frame(frame::error(None, message))
    }
}

struct Subscription {
    channel: PusherChannel,
    /// As in the native session: later deliveries at or below it are
    /// duplicates (a subscription moved make-before-break) and dropped.
    last_offset: u64,
    /// Presence channels: the members, and this connection's user.
    roster: Option<Roster>,
    user_id: String,
}

/// A user signed in with `pusher:signin`.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub id: String,
}

pub struct PusherSession<B: Broker> {
    gateway: Arc<Gateway<B>>,
    app: Arc<PusherApp>,
    conn: ConnId,
    socket_id: String,
    handle: ConnHandle,
    subs: HashMap<ChannelName, Subscription>,
    user: Option<SignedIn>,
    /// The signed-in user's channel, where backends end its connections.
    user_channel: Option<ChannelName>,
    client_events: TokenBucket,
    /// Every frame, as for native connections (`gateway.limits.rate_*`).
    frames: TokenBucket,
    /// Distinct channels subscribed per interval, as for native connections
    /// (`max_channels_per_interval`): subscribing creates channels at brokers.
    channels: ChannelQuota,
}

#[derive(Deserialize)]
struct ChannelData {
    user_id: UserId,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
}

impl<B: Broker> PusherSession<B> {
    pub fn new(
        gateway: Arc<Gateway<B>>,
        app: Arc<PusherApp>,
        conn: ConnId,
        socket_id: String,
        handle: ConnHandle,
    ) -> Self {
        let rate = app.client_events_per_second;
        let client_events = TokenBucket::new(f64::from(rate), rate, Instant::now());
        let limits = &gateway.settings.gateway.limits;
        let frames = TokenBucket::new(limits.rate_per_second, limits.rate_burst, Instant::now());
        let channels = ChannelQuota::new(
            limits.max_channels_per_interval,
            limits.channel_quota_interval,
            Instant::now(),
        );
        Self {
            gateway,
            app,
            conn,
            socket_id,
            handle,
            subs: HashMap::new(),
            user: None,
            user_channel: None,
            client_events,
            frames,
            channels,
        }
    }

    pub fn socket_id(&self) -> &str {
        &self.socket_id
    }

    /// Handles one text frame from the client.
    pub async fn handle_text(&mut self, text: &str) -> Reply {
        telemetry::received();
        if !self.frames.try_take(Instant::now()) {
            // Dropped, like a native connection's extra frames; the client
            // hears why.
            return Reply::error("Rate limit exceeded: frame dropped");
        }
        let parsed = match frame::parse(text) {
            Ok(parsed) => parsed,
            Err(e) => return Reply::error(&e.to_string()),
        };
        match parsed {
            ClientFrame::Ping => Reply::frame(frame::pong()),
            ClientFrame::Pong => Reply::default(),
            ClientFrame::Subscribe(s) => {
                let name = s.channel.clone();
                match self.subscribe(s).await {
                    Ok((data, cached)) => Reply {
                        frames: std::iter::once(frame::subscription_succeeded(&name, &data))
                            .chain(cached)
                            .collect(),
                        close: None,
                    },
                    Err(r) => {
                        telemetry::error("pusher_subscription_error", r.status);
                        Reply::frame(frame::subscription_error(&name, r.kind, &r.error, r.status))
                    }
                }
            }
            ClientFrame::Unsubscribe { channel } => {
                if let Ok(c) = PusherChannel::new(&self.app.id, &channel) {
                    self.leave(&c.native).await;
                }
                Reply::default()
            }
            ClientFrame::Signin { auth, user_data } => self.signin(&auth, &user_data).await,
            ClientFrame::ClientEvent {
                event,
                channel,
                data,
            } => match self.client_event(&event, &channel, data).await {
                Ok(()) => Reply::default(),
                Err(reply) => reply,
            },
            ClientFrame::Unknown { event } => Reply::error(&format!("Unsupported event {event:?}")),
        }
    }

    /// Subscribes; returns the `data` of `subscription_succeeded`, and for
    /// a cache channel its last event (or `pusher:cache_miss`).
    async fn subscribe(&mut self, s: Subscribe) -> Result<(String, Option<Utf8Bytes>), Refusal> {
        let channel = PusherChannel::new(&self.app.id, &s.channel)
            .map_err(|e| Refusal::new("InvalidChannel", e.to_string(), 400))?;
        if let Some(sub) = self.subs.get(&channel.native) {
            // Already subscribed: the same answer again.
            let data = sub
                .roster
                .as_ref()
                .map_or_else(|| "{}".to_owned(), Roster::subscription_data);
            return Ok((data, None));
        }
        let max = self
            .gateway
            .settings
            .gateway
            .limits
            .max_channels_per_connection;
        if self.subs.len() >= max {
            return Err(Refusal::new(
                "LimitReached",
                format!("at most {max} channels per connection"),
                429,
            ));
        }
        if !self.channels.touch(&channel.native, Instant::now()) {
            return Err(Refusal::new(
                "LimitReached",
                "too many new channels for this connection, retry later",
                429,
            ));
        }
        if channel.kind.needs_auth() {
            self.check_auth(&channel, &s)?;
        }
        let (user_id, user_info) = match channel.kind {
            ChannelKind::Presence => self.presence_member(&channel, &s).await?,
            _ => (
                self.user.as_ref().map(|u| u.id.clone()).unwrap_or_default(),
                None,
            ),
        };
        let req = SubscribeRequest {
            gateway: self.gateway.hub.gateway().clone(),
            channel: channel.native.clone(),
            since: None,
            client: Some(ClientInfo {
                client_id: self.socket_id.clone(),
                user_id: user_id.clone(),
                info: user_info,
            }),
        };
        let gw = &self.gateway;
        let reply = gw
            .hub
            .subscribe(&gw.broker, self.conn, self.handle.clone(), req)
            .await?;
        let roster = self.roster(&channel, &user_id).await?;
        let gw = &self.gateway;
        let data = roster
            .as_ref()
            .map_or_else(|| "{}".to_owned(), Roster::subscription_data);
        let cached = match channel.cache {
            true => {
                let at = reply.position.offset;
                Some(cache::replay(&gw.broker, &channel, at, &self.socket_id).await)
            }
            false => None,
        };
        self.subs.insert(
            channel.native.clone(),
            Subscription {
                channel,
                last_offset: reply.position.offset,
                roster,
                user_id,
            },
        );
        telemetry::subscriptions(1.0);
        Ok((data, cached))
    }

    /// A presence channel's members once subscribed; a failure undoes
    /// the subscription.
    async fn roster(
        &mut self,
        channel: &PusherChannel,
        user_id: &str,
    ) -> Result<Option<Roster>, Refusal> {
        if channel.kind != ChannelKind::Presence {
            return Ok(None);
        }
        let first = PresenceRequest::first(channel.native.clone());
        match self.gateway.broker.presence(first).await {
            Ok(page) => Ok(Some(roster_of(page.clients))),
            Err(e) => {
                let native = channel.native.clone();
                self.subs
                    .insert(native.clone(), placeholder(channel.clone(), user_id));
                self.leave(&native).await;
                Err(e.into())
            }
        }
    }

    fn check_auth(&self, channel: &PusherChannel, s: &Subscribe) -> Result<(), Refusal> {
        let auth = s
            .auth
            .as_deref()
            .ok_or_else(|| Refusal::new("AuthError", "auth is required for this channel", 401))?;
        let data = match channel.kind {
            ChannelKind::Presence => Some(s.channel_data.as_deref().ok_or_else(|| {
                Refusal::new("AuthError", "channel_data is required for presence", 401)
            })?),
            _ => None,
        };
        let message = signature::channel_message(&self.socket_id, &channel.name, data);
        signature::verify(&self.app.key, &self.app.secret, &message, auth)
            .map_err(|e| Refusal::new("AuthError", format!("{e}"), 401))
    }

    /// The member a presence subscription adds, checked against the
    /// app's limits.
    async fn presence_member(
        &self,
        channel: &PusherChannel,
        s: &Subscribe,
    ) -> Result<(String, Option<Box<RawValue>>), Refusal> {
        let text = s.channel_data.as_deref().unwrap_or_default();
        let data: ChannelData = serde_json::from_str(text)
            .map_err(|_| Refusal::new("AuthError", "channel_data must hold a user_id", 400))?;
        let user_id = data.user_id.into_string();
        if user_id.is_empty() || user_id.len() > MAX_USER_ID {
            return Err(Refusal::new(
                "AuthError",
                "user_id must be 1 to 128 bytes",
                400,
            ));
        }
        let max_info = self.app.max_presence_user_info_bytes;
        if data
            .user_info
            .as_ref()
            .is_some_and(|i| i.get().len() > max_info)
        {
            return Err(Refusal::new(
                "LimitReached",
                format!("user_info is larger than {max_info} bytes"),
                413,
            ));
        }
        let stats = self.gateway.broker.presence_stats(&channel.native).await?;
        if stats.num_users >= self.app.max_presence_members {
            return Err(Refusal::new(
                "LimitReached",
                format!(
                    "presence channel is full ({} members)",
                    self.app.max_presence_members
                ),
                403,
            ));
        }
        Ok((user_id, data.user_info))
    }

    async fn signin(&mut self, auth: &str, user_data: &str) -> Reply {
        let message = signature::signin_message(&self.socket_id, user_data);
        let user = serde_json::from_str::<UserData>(user_data).map(|d| d.id.into_string());
        match (
            signature::verify(&self.app.key, &self.app.secret, &message, auth),
            user,
        ) {
            (Ok(()), Ok(id)) if !id.is_empty() && self.user.is_none() => {
                self.listen_as(&id).await;
                self.user = Some(SignedIn { id });
                Reply::frame(frame::signin_success(user_data))
            }
            (Ok(()), Ok(_)) if self.user.is_some() => Reply::error("Already signed in"),
            _ => {
                let close = Close::Unauthorized;
                Reply {
                    frames: vec![frame::error(Some(close.code()), close.message())],
                    close: Some(close),
                }
            }
        }
    }

    /// Subscribes to the user's channel, so that `terminate_connections`
    /// reaches this connection on whichever gateway it is.
    async fn listen_as(&mut self, user: &str) {
        let Some(channel) = user_channel(&self.app.id, user) else {
            tracing::debug!(
                "signed-in user id cannot name a channel; terminate_connections will not reach it"
            );
            return;
        };
        let req = SubscribeRequest {
            gateway: self.gateway.hub.gateway().clone(),
            channel: channel.clone(),
            since: None,
            client: None,
        };
        let gw = &self.gateway;
        match gw
            .hub
            .subscribe(&gw.broker, self.conn, self.handle.clone(), req)
            .await
        {
            Ok(_) => self.user_channel = Some(channel),
            Err(e) => tracing::warn!(error = %e, "user channel unavailable"),
        }
    }

    async fn client_event(
        &mut self,
        event: &str,
        channel: &str,
        data: &RawValue,
    ) -> Result<(), Reply> {
        if !self.app.enable_client_messages {
            return Err(Reply::error("Client events are not enabled for this app"));
        }
        let channel =
            PusherChannel::new(&self.app.id, channel).map_err(|e| Reply::error(&e.to_string()))?;
        if !channel.kind.allows_client_events() {
            return Err(Reply::error(
                "Client event rejected - only supported on private and presence channels",
            ));
        }
        let Some(sub) = self.subs.get(&channel.native) else {
            return Err(Reply::error(
                "Client event rejected - not subscribed to this channel",
            ));
        };
        if event.len() > MAX_EVENT_NAME {
            return Err(Reply::error("Client event rejected - event name too long"));
        }
        let max = self.app.max_event_bytes;
        if data.get().len() > max {
            return Err(Reply::error(&format!(
                "Client event rejected - data larger than {max} bytes"
            )));
        }
        if let Err(e) = data::check(data.get()) {
            return Err(Reply::error(&format!("Client event rejected - {e}")));
        }
        if !self.client_events.try_take(Instant::now()) {
            return Err(Reply::frame(frame::error(
                Some(4301),
                "Client event rejected due to rate limit",
            )));
        }
        let presence = channel.kind == ChannelKind::Presence;
        let envelope = Envelope {
            event: event.into(),
            data,
            socket_id: Some(self.socket_id.as_str().into()),
            user_id: presence.then(|| sub.user_id.as_str().into()),
        };
        let req = PublishRequest {
            channel: channel.native,
            from: sub.user_id.clone(),
            data: envelope.to_raw(),
            idempotency_key: None,
        };
        self.gateway.broker.publish(req).await.map_err(|e| {
            tracing::warn!(error = %e, "pusher client event not published");
            Reply::error("Client event not delivered, retry")
        })?;
        Ok(())
    }

    /// What a delivery means for this connection: a frame, or the end.
    pub fn deliver(&mut self, out: &Outgoing) -> Reply {
        if self.user_channel.as_ref() == Some(&out.channel) {
            return on_user_channel(out);
        }
        Reply {
            frames: self.translate(out).into_iter().collect(),
            close: None,
        }
    }

    /// The frame a delivery on a channel becomes, if any.
    fn translate(&mut self, out: &Outgoing) -> Option<Utf8Bytes> {
        let sub = self.subs.get_mut(&out.channel)?;
        match out.kind {
            DeliveryKind::Publication { offset } if offset > sub.last_offset => {
                sub.last_offset = offset;
            }
            DeliveryKind::Publication { .. } | DeliveryKind::Control => return None,
            DeliveryKind::Reset { offset } => {
                sub.last_offset = offset;
                return None;
            }
            DeliveryKind::Event => {}
        }
        let name = sub.channel.name.as_str();
        match frame::native(out.text.as_str()) {
            NativeFrame::Message(data) => frame::event_for(name, data, &self.socket_id),
            NativeFrame::Join(p) => {
                let roster = sub.roster.as_mut()?;
                let info = p.info.clone();
                match roster.join(&p.client_id, &p.user_id, p.info)? {
                    Change::Added(user) => Some(frame::member_added(name, &user, info.as_deref())),
                    Change::Removed(_) => None,
                }
            }
            NativeFrame::Leave(p) => match sub.roster.as_mut()?.leave(&p.client_id)? {
                Change::Removed(user) => Some(frame::member_removed(name, &user)),
                Change::Added(_) => None,
            },
            NativeFrame::Other => None,
        }
    }

    async fn leave(&mut self, native: &ChannelName) {
        if self.subs.remove(native).is_none() {
            return;
        }
        telemetry::subscriptions(-1.0);
        let gw = &self.gateway;
        if let Err(e) = gw.broker.leave(native, &self.socket_id).await {
            tracing::warn!(channel = %native, error = %e, "presence leave failed");
        }
        gw.hub.unsubscribe(&gw.broker, self.conn, native).await;
    }

    /// Leaves every channel; the connection is gone.
    pub async fn close(&mut self) {
        if let Some(channel) = self.user_channel.take() {
            let gw = &self.gateway;
            gw.hub.unsubscribe(&gw.broker, self.conn, &channel).await;
        }
        let channels: Vec<ChannelName> = self.subs.keys().cloned().collect();
        for channel in channels {
            self.leave(&channel).await;
        }
    }
}

fn roster_of(list: Vec<ClientInfo>) -> Roster {
    let mut roster = Roster::default();
    for c in list {
        roster.join(&c.client_id, &c.user_id, c.info);
    }
    roster
}

/// A subscription recorded only so that [`PusherSession::leave`] undoes it.
fn placeholder(channel: PusherChannel, user_id: &str) -> Subscription {
    Subscription {
        channel,
        last_offset: 0,
        roster: None,
        user_id: user_id.to_owned(),
    }
}
