//! Joining and leaving channels, and publishing to them. Each request is
//! checked against the connection's state when it starts (its channel's
//! earlier requests are settled by then, see [`super::inflight`]), and
//! what it asks of the broker becomes a [`Call`] that owns all it needs,
//! so that it runs beside the connection's other channels.

use std::{future::Future, time::Instant};

use serde_json::value::RawValue;
use switchboard_core::{
    Broker, ChannelName, ClientInfo, Position, PublishRequest, SubscribeRequest,
    frame::reply::{Empty, Publications, PublishData, SubscribeData},
};

use super::{
    Session, Subscription,
    pipeline::{Call, Done},
    respond,
};
use crate::{error::RequestError, telemetry};

impl<B: Broker> Session<B> {
    pub(super) fn subscribe(
        &mut self,
        id: Option<&RawValue>,
        channel: ChannelName,
        since: Option<Position>,
    ) -> Result<Call, RequestError> {
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
        // Subscribes still running count: each may succeed.
        if self.subs.keys().filter(|c| !c.is_personal()).count() + self.joining >= max {
            return Err(RequestError::TooManyChannels(max));
        }
        let options = self.access(&channel, false)?;
        self.channel_quota.admit(&channel, Instant::now())?;
        let client = options.presence.then(|| ClientInfo {
            client_id: self.client_id.clone(),
            user_id: self.identity().user_id.clone(),
            info: self.identity().info.clone(),
        });
        Ok(self.join(id, channel, since, client))
    }

    pub(super) fn unsubscribe(
        &mut self,
        id: Option<&RawValue>,
        channel: ChannelName,
    ) -> Result<Call, RequestError> {
        if channel.is_personal() {
            return Err(RequestError::PermissionDenied);
        }
        let Some(leave) = self.leave(&channel) else {
            return Err(RequestError::NotSubscribed);
        };
        let id = id.map(ToOwned::to_owned);
        Ok(Box::pin(async move {
            leave.await;
            let frame = respond(id.as_deref(), Empty {});
            Done::answered(channel, None, Ok(Some(frame)))
        }))
    }

    /// Publishes as this connection's user; only a request with an id
    /// gets a reply.
    pub(super) fn publish(
        &mut self,
        id: Option<&RawValue>,
        channel: ChannelName,
        data: &RawValue,
    ) -> Result<Call, RequestError> {
        let options = self.access(&channel, true)?;
        if options.publish_requires_subscription && !self.subs.contains_key(&channel) {
            return Err(RequestError::NotSubscribed);
        }
        self.channel_quota.admit(&channel, Instant::now())?;
        let req = PublishRequest {
            channel: channel.clone(),
            from: self.identity().user_id.clone(),
            data: data.to_owned(),
            idempotency_key: None,
        };
        let gateway = self.gateway.clone();
        let id = id.map(ToOwned::to_owned);
        Ok(Box::pin(async move {
            let result = gateway.broker.publish(req).await.map(|position| {
                id.as_deref().map(|id| {
                    respond(
                        Some(id),
                        PublishData {
                            offset: position.offset,
                            epoch: &position.epoch,
                        },
                    )
                })
            });
            Done::answered(channel, id.as_deref(), result.map_err(RequestError::from))
        }))
    }

    /// Subscribes this connection; the call's answer is the subscribe
    /// reply frame and the subscription to record.
    pub(super) fn join(
        &mut self,
        id: Option<&RawValue>,
        channel: ChannelName,
        since: Option<Position>,
        client: Option<ClientInfo>,
    ) -> Call {
        let in_presence = client.is_some();
        let req = SubscribeRequest {
            gateway: self.gateway.hub.gateway().clone(),
            channel: channel.clone(),
            since,
            client,
        };
        let gateway = self.gateway.clone();
        let (conn, handle) = (self.conn, self.handle());
        let id = id.map(ToOwned::to_owned);
        self.joining += 1;
        Box::pin(async move {
            let reply = gateway
                .hub
                .subscribe(&gateway.broker, conn, handle, req)
                .await;
            let mut reply = match reply {
                Ok(reply) => reply,
                Err(e) => return Done::joined(channel, id.as_deref(), Err(e.into())),
            };
            let max = gateway.settings.gateway.limits.max_history_reply;
            if reply.publications.len() > max {
                // Keep the newest, which meet the live stream without a
                // gap, and say that the answer is not complete.
                reply.publications.drain(..reply.publications.len() - max);
                reply.recovered = Some(false);
            }
            let frame = respond(
                id.as_deref(),
                SubscribeData {
                    channel: channel.as_str(),
                    offset: reply.position.offset,
                    epoch: &reply.position.epoch,
                    recoverable: reply.recoverable,
                    recovered: reply.recovered,
                    publications: reply.recovered.map(|_| Publications(&reply.publications)),
                    join_leave: reply.join_leave,
                },
            );
            let sub = Subscription {
                last_offset: reply.position.offset,
                in_presence,
            };
            Done::joined(channel, None, Ok((frame, sub)))
        })
    }

    /// Forgets the subscription now (its deliveries are dropped from here
    /// on) and returns the rest of leaving, for the caller to run; `None`
    /// if not subscribed.
    pub(super) fn leave(
        &mut self,
        channel: &ChannelName,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let sub = self.subs.remove(channel)?;
        telemetry::subscriptions(-1.0);
        let gateway = self.gateway.clone();
        let (conn, client_id, channel) = (self.conn, self.client_id.clone(), channel.clone());
        Some(async move {
            if sub.in_presence
                && let Err(e) = gateway.broker.leave(&channel, &client_id).await
            {
                tracing::warn!(channel = %channel, error = %e, "presence leave failed");
            }
            gateway
                .hub
                .unsubscribe(&gateway.broker, conn, &channel)
                .await;
        })
    }
}
