//! The server API's operations, independent of transport: the HTTP handlers
//! ([`super::http`]) and the gRPC service ([`super::grpc`]) both validate
//! their input into the parameter types ([`super::params`]) and call these
//! methods, which answer with the result types ([`super::results`]).
//!
//! Everything goes through the [`Broker`] trait, so that in a cluster the
//! owner of each channel answers, whichever gateway a backend called.

use std::{sync::Arc, time::Instant};

use serde_json::value::RawValue;
use switchboard_core::{
    Broker, ChannelName, ChannelsRequest, Control, HistoryRequest, Position, PresenceRequest,
    PublishRequest, frame::data, presence::MAX_PAGE,
};
use switchboard_node::idempotency;

use super::{
    error::ApiError,
    params::{
        BroadcastParams, ChannelParams, ChannelsParams, DisconnectUserParams, HistoryParams,
        InfoParams, PresenceParams, PublishParams, SendToUserParams, UnsubscribeUserParams,
        UserParams,
    },
    results::{
        self, BroadcastOutcome, BroadcastResult, ChannelEntry, ChannelsResult, Empty, GatewayInfo,
        HistoryResult, InfoResult, NodeEntry, PresenceResult, PresenceStatsResult, PublishResult,
        UserOnlineResult,
    },
};
use crate::{error::MAX_CLOSE_REASON, gateway::Gateway, telemetry};

/// Most channels in one broadcast.
pub const MAX_BROADCAST_CHANNELS: usize = 1000;
/// Default and largest `limit` of a channels listing.
pub const DEFAULT_CHANNELS_LIMIT: usize = 1000;
pub const MAX_CHANNELS_LIMIT: usize = 10_000;
/// The disconnect defaults: a close code in the range for applications.
pub const DEFAULT_DISCONNECT_CODE: u16 = switchboard_core::frame::close::REQUESTED;
pub const DEFAULT_DISCONNECT_REASON: &str = "disconnected by the server";

/// The operations, bound to one gateway. Cheap to clone.
pub struct Operations<B: Broker> {
    gateway: Arc<Gateway<B>>,
}

impl<B: Broker> Clone for Operations<B> {
    fn clone(&self) -> Self {
        Self {
            gateway: self.gateway.clone(),
        }
    }
}

/// Counts and logs one call's outcome; every transport reports through it.
pub fn observe<T>(call: &'static str, result: Result<T, ApiError>) -> Result<T, ApiError> {
    match &result {
        Ok(_) => telemetry::api_call(call, "ok"),
        Err(e) => {
            telemetry::api_call(call, e.code());
            if e.status().is_server_error() {
                tracing::warn!(call, code = e.code(), error = %e, "server API call failed");
            } else {
                // Not the text: it may quote the request (a JSON error
                // names the value it choked on), and logs carry no payloads.
                // The caller got the text in the reply.
                tracing::debug!(call, code = e.code(), "server API call refused");
            }
        }
    }
    result
}

impl<B: Broker> Operations<B> {
    pub fn new(gateway: Arc<Gateway<B>>) -> Self {
        Self { gateway }
    }

    pub async fn publish(&self, p: PublishParams) -> Result<PublishResult, ApiError> {
        let channel = self.channel(&p.channel)?;
        self.check_data(&p.data)?;
        let key = check_key(p.idempotency_key)?;
        let position = self.publish_to(channel, p.data, key).await?;
        Ok(position.into())
    }

    pub async fn broadcast(&self, p: BroadcastParams) -> Result<BroadcastResult, ApiError> {
        if p.channels.is_empty() || p.channels.len() > MAX_BROADCAST_CHANNELS {
            return Err(ApiError::BadRequest(format!(
                "channels must list 1 to {MAX_BROADCAST_CHANNELS} channels"
            )));
        }
        // All or nothing for what can be checked up front: a typo in one
        // name must not leave the others published.
        let mut channels = Vec::with_capacity(p.channels.len());
        for name in &p.channels {
            let channel = self.channel(name)?;
            if channels.contains(&channel) {
                return Err(ApiError::BadRequest(format!(
                    "channel {name:?} is listed twice"
                )));
            }
            channels.push(channel);
        }
        self.check_data(&p.data)?;
        let key = check_key(p.idempotency_key)?;
        let publishes = channels.into_iter().map(|channel| {
            let data = p.data.clone();
            let key = key.clone();
            async move {
                let name = channel.as_str().to_owned();
                match self.publish_to(channel, data, key).await {
                    Ok(position) => BroadcastOutcome {
                        channel: name,
                        offset: Some(position.offset),
                        epoch: Some(position.epoch),
                        error: None,
                    },
                    Err(e) => BroadcastOutcome {
                        channel: name,
                        offset: None,
                        epoch: None,
                        error: Some(e.body()),
                    },
                }
            }
        });
        let results = futures_util::future::join_all(publishes).await;
        Ok(BroadcastResult { results })
    }

    pub async fn send_to_user(&self, p: SendToUserParams) -> Result<PublishResult, ApiError> {
        let channel = self.user_channel(&p.user)?;
        self.check_data(&p.data)?;
        let key = check_key(p.idempotency_key)?;
        let position = self.publish_to(channel, p.data, key).await?;
        Ok(position.into())
    }

    pub async fn disconnect_user(&self, p: DisconnectUserParams) -> Result<Empty, ApiError> {
        let channel = self.user_channel(&p.user)?;
        let code = p.code.unwrap_or(DEFAULT_DISCONNECT_CODE);
        if !(3000..=4999).contains(&code) {
            return Err(ApiError::BadRequest(format!(
                "code must be a WebSocket close code for applications, 3000 to 4999 (got {code})"
            )));
        }
        let reason = p
            .reason
            .unwrap_or_else(|| DEFAULT_DISCONNECT_REASON.to_owned());
        if reason.len() > MAX_CLOSE_REASON {
            return Err(ApiError::BadRequest(format!(
                "reason must be at most {MAX_CLOSE_REASON} bytes (a WebSocket close frame's limit)"
            )));
        }
        let command = Control::Disconnect {
            code,
            reason,
            reconnect: p.reconnect.unwrap_or(false),
        };
        self.gateway.broker.control(&channel, command).await?;
        tracing::info!(user = %p.user, code, "server API: disconnect user");
        Ok(Empty {})
    }

    pub async fn unsubscribe_user(&self, p: UnsubscribeUserParams) -> Result<Empty, ApiError> {
        let personal = self.user_channel(&p.user)?;
        let channel = self.channel(&p.channel)?;
        if channel.is_personal() {
            return Err(ApiError::BadRequest(
                "a user cannot be unsubscribed from a personal channel".into(),
            ));
        }
        self.gateway
            .broker
            .control(&personal, Control::Unsubscribe { channel })
            .await?;
        tracing::info!(user = %p.user, channel = %p.channel, "server API: unsubscribe user");
        Ok(Empty {})
    }

    pub async fn presence(&self, p: PresenceParams) -> Result<PresenceResult, ApiError> {
        let channel = self.channel(&p.channel)?;
        let page = self
            .gateway
            .broker
            .presence(PresenceRequest {
                channel,
                after: p.cursor,
                limit: p.limit.unwrap_or(MAX_PAGE),
            })
            .await?;
        Ok(PresenceResult {
            channel: p.channel,
            clients: page.clients,
            next_cursor: page.next,
        })
    }

    pub async fn presence_stats(&self, p: ChannelParams) -> Result<PresenceStatsResult, ApiError> {
        let channel = self.channel(&p.channel)?;
        let stats = self.gateway.broker.presence_stats(&channel).await?;
        Ok(PresenceStatsResult {
            channel: p.channel,
            num_clients: stats.num_clients,
            num_users: stats.num_users,
        })
    }

    pub async fn user_online(&self, p: UserParams) -> Result<UserOnlineResult, ApiError> {
        let channel = self.user_channel(&p.user)?;
        let stats = self.gateway.broker.presence_stats(&channel).await?;
        Ok(UserOnlineResult {
            user: p.user,
            online: stats.num_clients > 0,
            num_clients: stats.num_clients,
        })
    }

    pub async fn history(&self, p: HistoryParams) -> Result<HistoryResult, ApiError> {
        let channel = self.channel(&p.channel)?;
        if !self
            .gateway
            .settings
            .namespaces
            .options(&channel)?
            .history_enabled()
        {
            return Err(ApiError::NotAvailable("history"));
        }
        let max = self.gateway.settings.gateway.limits.max_history_reply;
        let limit = p.limit.unwrap_or(max);
        if limit > max {
            return Err(ApiError::BadRequest(format!(
                "limit must be at most {max} (limits.max_history_reply)"
            )));
        }
        let reply = self
            .gateway
            .broker
            .history(HistoryRequest {
                channel,
                since: p.since,
                limit,
                reverse: p.reverse.unwrap_or(false),
            })
            .await?;
        let publications = reply
            .publications
            .iter()
            .map(|p| {
                results::Publication::decode(&p.frame).map_err(|e| {
                    tracing::error!(error = %e, "history holds a frame that is not a publication");
                    ApiError::Internal
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(HistoryResult {
            channel: p.channel,
            offset: reply.position.offset,
            epoch: reply.position.epoch,
            publications,
            complete: reply.complete,
        })
    }

    pub async fn channels(&self, p: ChannelsParams) -> Result<ChannelsResult, ApiError> {
        let limit = p.limit.unwrap_or(DEFAULT_CHANNELS_LIMIT);
        if limit > MAX_CHANNELS_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit must be at most {MAX_CHANNELS_LIMIT}"
            )));
        }
        // One more than asked, to tell whether the list was cut.
        let mut found = self
            .gateway
            .broker
            .channels(ChannelsRequest {
                prefix: p.prefix.unwrap_or_default(),
                limit: limit + 1,
            })
            .await?;
        let truncated = found.len() > limit;
        found.truncate(limit);
        Ok(ChannelsResult {
            channels: found
                .into_iter()
                .map(|c| ChannelEntry {
                    channel: c.channel.as_str().to_owned(),
                    num_clients: c.presence.map(|p| p.num_clients),
                    num_users: c.presence.map(|p| p.num_users),
                })
                .collect(),
            truncated,
        })
    }

    pub async fn info(&self, _: InfoParams) -> Result<InfoResult, ApiError> {
        let nodes = self.gateway.broker.nodes().await?;
        Ok(InfoResult {
            gateway: GatewayInfo {
                name: self.gateway.hub.gateway().to_string(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_seconds: uptime(self.gateway.started),
                connections: self.gateway.connections(),
                channels: self.gateway.hub.channel_count(),
            },
            nodes: nodes
                .into_iter()
                .map(|n| NodeEntry {
                    name: n.name,
                    version: n.version,
                    uptime_seconds: n.uptime.as_secs(),
                    num_channels: n.num_channels,
                    num_active_channels: n.num_active_channels,
                    num_gateways: n.num_gateways,
                    num_clients: n.num_clients,
                    num_publications: n.num_publications,
                })
                .collect(),
        })
    }

    async fn publish_to(
        &self,
        channel: ChannelName,
        data: Box<RawValue>,
        idempotency_key: Option<String>,
    ) -> Result<Position, ApiError> {
        let position = self
            .gateway
            .broker
            .publish(PublishRequest {
                channel: channel.clone(),
                // Backends publish as nobody in particular, like anonymous clients.
                from: String::new(),
                data,
                idempotency_key,
            })
            .await?;
        tracing::debug!(channel = %channel, offset = position.offset, epoch = %position.epoch, "server API: published");
        Ok(position)
    }

    /// A valid channel name in a configured namespace. Backends are not
    /// bound by client rules (`allow_publish`, claims, personal channels).
    fn channel(&self, name: &str) -> Result<ChannelName, ApiError> {
        let channel = ChannelName::new(name)?;
        match self.gateway.settings.namespaces.options(&channel) {
            Ok(_) => Ok(channel),
            Err(_) if channel.is_personal() => Err(ApiError::PersonalChannelsDisabled),
            Err(e) => Err(e.into()),
        }
    }

    /// The personal channel of `user`: where everything for that user goes.
    fn user_channel(&self, user: &str) -> Result<ChannelName, ApiError> {
        if user.is_empty() {
            return Err(ApiError::InvalidUser(
                "empty (anonymous clients cannot be addressed)",
            ));
        }
        if !self.gateway.settings.namespaces.personal.enabled {
            return Err(ApiError::PersonalChannelsDisabled);
        }
        ChannelName::personal(user).map_err(|_| {
            ApiError::InvalidUser(
                "1 to 254 bytes of [A-Za-z0-9_-:.@=/!,+] (it must form a personal channel name)",
            )
        })
    }

    fn check_data(&self, data: &RawValue) -> Result<(), ApiError> {
        let max = self.gateway.settings.api.max_data_bytes;
        let len = data.get().len();
        if len > max {
            return Err(ApiError::TooLarge(format!(
                "data is {len} bytes; at most {max} are allowed (api.max_data_bytes)"
            )));
        }
        data::check(data.get()).map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

fn check_key(key: Option<String>) -> Result<Option<String>, ApiError> {
    match key {
        Some(k) if !idempotency::valid_key(&k) => Err(ApiError::BadRequest(format!(
            "idempotency_key must be 1 to {} bytes",
            idempotency::MAX_KEY_LEN
        ))),
        // The gateways' own keys (a publish without one gets one) begin
        // with it: a client's may not pose as one of them.
        Some(k) if idempotency::is_gateway_key(&k) => Err(ApiError::BadRequest(
            "idempotency_key must not begin with U+0001".into(),
        )),
        key => Ok(key),
    }
}

fn uptime(started: Instant) -> u64 {
    started.elapsed().as_secs()
}
