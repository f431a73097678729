//! The [`Broker`] impl of the [`Router`]: each call sent to the channel's
//! owner; listings gathered from every reachable broker.

use std::sync::Arc;

use super::{Router, table::Subscription};
use switchboard_cluster::remote_broker::RemoteBroker;
use switchboard_core::{
    Broker, BrokerError, ChannelName, ChannelSummary, ChannelsRequest, Control, DeliverySink,
    GatewayId, HistoryReply, HistoryRequest, NodeInfo, Position, PresencePage, PresenceRequest,
    PresenceStats, PublishRequest, SubscribeReply, SubscribeRequest,
};

impl Broker for Router {
    async fn attach(
        &self,
        gateway: GatewayId,
        sink: Arc<dyn DeliverySink>,
    ) -> Result<(), BrokerError> {
        if self.inner.gateway.set(gateway).is_err() || self.inner.sink.set(sink).is_err() {
            return Err(BrokerError::Unavailable(
                "router is already attached".into(),
            ));
        }
        let mut links = self.inner.links.write();
        for (name, link) in links.iter_mut() {
            self.start_link(name, link);
        }
        self.inner.tasks.spawn(self.clone().reconciler());
        Ok(())
    }

    async fn detach(&self, gateway: &GatewayId) -> Result<(), BrokerError> {
        let remotes: Vec<RemoteBroker> = self
            .inner
            .links
            .read()
            .values()
            .map(|l| l.remote.clone())
            .collect();
        for remote in remotes {
            if let Err(e) = remote.detach(gateway).await {
                tracing::debug!(error = %e, "detach failed");
            }
        }
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<SubscribeReply, BrokerError> {
        let channel = req.channel.clone();
        let client = req.client.clone();
        let reply = self
            .at_owner(&channel, true, |owner, remote| {
                let req = req.clone();
                async move {
                    {
                        let mut sub = self
                            .inner
                            .subs
                            .entry(req.channel.clone())
                            .or_insert_with(|| Subscription::new(owner.clone()));
                        if sub.is_first() {
                            // First subscription here: hold live deliveries
                            // until the reply fixes where this gateway's
                            // stream begins.
                            sub.owner = owner.clone();
                            sub.hold();
                        }
                    }
                    remote.subscribe(req).await
                }
            })
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                self.inner
                    .subs
                    .remove_if(&channel, |_, s| s.is_first() && s.clients.is_empty());
                return Err(e);
            }
        };
        let first = self
            .inner
            .subs
            .get(&channel)
            .is_some_and(|s| s.is_settling() && s.is_first());
        if first {
            self.start(&channel, reply.position.clone(), reply.term);
        }
        if let Some(client) = client
            && let Some(mut sub) = self.inner.subs.get_mut(&channel)
        {
            sub.clients.insert(client.client_id.clone(), client);
        }
        Ok(reply)
    }

    async fn unsubscribe(
        &self,
        gateway: &GatewayId,
        channel: &ChannelName,
    ) -> Result<(), BrokerError> {
        let owner = self.inner.subs.remove(channel).map(|(_, s)| s.owner);
        // Let go where the subscription is, whoever the ring names now.
        let remote = match owner.and_then(|o| self.attached_now(&o)) {
            Some(remote) => remote,
            None => self.owner(channel).await?.1,
        };
        remote.unsubscribe(gateway, channel).await
    }

    async fn leave(&self, channel: &ChannelName, client_id: &str) -> Result<(), BrokerError> {
        if let Some(mut sub) = self.inner.subs.get_mut(channel) {
            sub.clients.remove(client_id);
        }
        self.at_owner(channel, true, |_, remote| async move {
            remote.leave(channel, client_id).await
        })
        .await
    }

    async fn publish(&self, mut req: PublishRequest) -> Result<Position, BrokerError> {
        // A publication with a key is safe to send again: the owner (or,
        // with replication, the broker taking it over) answers a repeated
        // key with its first position. One without gets a key of this
        // gateway's, so that it may be asked again too.
        if req.idempotency_key.is_none() {
            req.idempotency_key = Some(self.inner.retry_keys.next());
        }
        self.at_owner(&req.channel, true, |_, remote| {
            let req = req.clone();
            async move { remote.publish(req).await }
        })
        .await
    }

    async fn presence(&self, req: PresenceRequest) -> Result<PresencePage, BrokerError> {
        let channel = req.channel.clone();
        self.at_owner(&channel, true, |_, remote| {
            let req = req.clone();
            async move { remote.presence(req).await }
        })
        .await
    }

    async fn presence_stats(&self, channel: &ChannelName) -> Result<PresenceStats, BrokerError> {
        self.at_owner(channel, true, |_, remote| async move {
            remote.presence_stats(channel).await
        })
        .await
    }

    async fn history(&self, req: HistoryRequest) -> Result<HistoryReply, BrokerError> {
        self.at_owner(&req.channel, true, |_, remote| {
            let req = req.clone();
            async move { remote.history(req).await }
        })
        .await
    }

    async fn control(&self, channel: &ChannelName, command: Control) -> Result<(), BrokerError> {
        // Commands (unsubscribe or disconnect a user) are not sent twice.
        self.at_owner(channel, false, |_, remote| {
            let command = command.clone();
            async move { remote.control(channel, command).await }
        })
        .await
    }

    /// Every broker's channels, merged in name order.
    async fn channels(&self, req: ChannelsRequest) -> Result<Vec<ChannelSummary>, BrokerError> {
        let mut all = Vec::new();
        for remote in self.reachable().await {
            all.extend(remote.channels(req.clone()).await?);
        }
        all.sort_by(|a, b| a.channel.cmp(&b.channel));
        all.dedup_by(|a, b| a.channel == b.channel);
        all.truncate(req.limit);
        Ok(all)
    }

    /// Every broker's account of itself.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let mut all = Vec::new();
        for remote in self.reachable().await {
            all.extend(remote.nodes().await?);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}

impl Router {
    /// Ends the first subscription to `channel` here at `position`,
    /// answered by a copy of `term`.
    fn start(&self, channel: &ChannelName, position: Position, term: u64) {
        let Some(mut sub) = self.inner.subs.get_mut(channel) else {
            return;
        };
        sub.placed = true;
        let Some(sink) = self.sink() else { return };
        for d in sub.start(position, term) {
            sink.deliver(d);
        }
    }
}
