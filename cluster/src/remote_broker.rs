//! [`RemoteBroker`]: one broker reached over gRPC, behind the same
//! [`Broker`] trait gateways use in one process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use switchboard_proto::broker::v1::{self as pb, broker_client::BrokerClient};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Streaming, transport::Channel};

use crate::{dialer::Dialer, ownership::Release, publish_stream::PublishStream, wire};
use switchboard_core::{
    Broker, BrokerAddr, BrokerError, ChannelName, ChannelSummary, ChannelsRequest, Control,
    DeliverySink, GatewayId, HistoryReply, HistoryRequest, NodeInfo, Position, PresencePage,
    PresenceRequest, PresenceStats, PublishRequest, SubscribeReply, SubscribeRequest,
};

/// How long one unary call may take before the owner counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a claim of a batch of channels may take.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

/// The gRPC metadata key under which a gateway tells a broker which ring
/// (its version) it routed by.
pub const RING_HEADER: &str = "x-switchboard-ring";

#[derive(Clone)]
pub struct RemoteBroker {
    client: BrokerClient<Channel>,
    /// The caller's current ring version, sent with each call (a gateway
    /// that follows gossip); 0 or absent: not sent.
    ring: Option<Arc<AtomicU64>>,
    /// Publishes go on one stream, shared by every clone.
    publishes: Arc<PublishStream>,
    /// The owning role's tasks: a delivery stream forwarded by
    /// [`Broker::attach`], and the publish stream's reader, run here,
    /// until `stop`.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl RemoteBroker {
    /// A lazily connected client for `broker`, reached the way `dialer`
    /// reaches brokers; what it runs in the background is `tasks`', until
    /// `stop`.
    pub fn dial(
        dialer: &dyn Dialer,
        broker: &BrokerAddr,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self, BrokerError> {
        Ok(Self::from_channel(dialer.dial(broker)?, tasks, stop))
    }

    /// A client over an existing gRPC channel.
    pub fn from_channel(channel: Channel, tasks: TaskTracker, stop: CancellationToken) -> Self {
        let client = BrokerClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(16 << 20);
        Self {
            publishes: Arc::new(PublishStream::new(
                client.clone(),
                tasks.clone(),
                stop.clone(),
            )),
            client,
            ring: None,
            tasks,
            stop,
        }
    }

    /// Sends the ring version in `ring` with every call.
    pub fn vouching(mut self, ring: Arc<AtomicU64>) -> Self {
        self.ring = Some(ring);
        self
    }

    /// The ring version to send; 0: none.
    fn ring_version(&self) -> u64 {
        self.ring.as_ref().map_or(0, |r| r.load(Ordering::Relaxed))
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        let version = self.ring_version();
        if version != 0 {
            req.metadata_mut().insert(
                RING_HEADER,
                version
                    .to_string()
                    .parse()
                    .expect("digits are valid metadata"),
            );
        }
        // Tells the server; `call` enforces it here too, since a request
        // to a peer that is gone may otherwise wait on the transport.
        req.set_timeout(CALL_TIMEOUT);
        req
    }

    /// Asks the broker that held `channel` to hand it over to broker `to`,
    /// which `holds_copy` of it or not.
    pub async fn release(
        &self,
        channel: &ChannelName,
        to: &str,
        holds_copy: bool,
    ) -> Result<Release, BrokerError> {
        let req = self.request(pb::ReleaseRequest {
            channel: channel.as_str().to_owned(),
            to: to.to_owned(),
            holds_copy,
        });
        wire::release_from_pb(call(self.client.clone().release(req)).await?)
    }

    /// Asks the owner of `channels` to take them from broker `from`.
    pub async fn claim(&self, from: &str, channels: &[ChannelName]) -> Result<(), BrokerError> {
        let req = self.request(pb::ClaimRequest {
            from: from.to_owned(),
            channels: channels.iter().map(|c| c.as_str().to_owned()).collect(),
        });
        // Claiming pulls each channel in turn; give it the time that takes.
        let mut req = req;
        req.set_timeout(CLAIM_TIMEOUT);
        match tokio::time::timeout(CLAIM_TIMEOUT, self.client.clone().claim(req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(wire::broker_error(&status)),
            Err(_) => Err(BrokerError::Unavailable("claim timed out".into())),
        }
    }

    /// Opens this gateway's delivery stream.
    pub async fn open_stream(
        &self,
        gateway: &GatewayId,
    ) -> Result<Streaming<pb::Delivery>, BrokerError> {
        let req = pb::AttachRequest {
            gateway: gateway.as_str().to_owned(),
            batches: true,
        };
        let resp = call(self.client.clone().attach(req)).await?;
        Ok(resp)
    }
}

/// Bounds one unary call and maps its failure.
async fn call<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(wire::broker_error(&status)),
        Err(_) => Err(BrokerError::Unavailable("call timed out".into())),
    }
}

impl Broker for RemoteBroker {
    /// Forwards the stream into `sink` until it ends. Gateways in a cluster
    /// use [`crate::Router`], which also re-attaches and resubscribes.
    async fn attach(
        &self,
        gateway: GatewayId,
        sink: Arc<dyn DeliverySink>,
    ) -> Result<(), BrokerError> {
        let mut stream = self.open_stream(&gateway).await?;
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(d)) => {
                            for d in wire::deliveries_from_pb(d).flatten() {
                                sink.deliver(d);
                            }
                        }
                        _ => return,
                    },
                }
            }
        });
        Ok(())
    }

    async fn detach(&self, gateway: &GatewayId) -> Result<(), BrokerError> {
        let req = self.request(pb::DetachRequest {
            gateway: gateway.as_str().to_owned(),
        });
        call(self.client.clone().detach(req)).await?;
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<SubscribeReply, BrokerError> {
        let req = self.request(wire::subscribe_to_pb(&req));
        let reply = call(self.client.clone().subscribe(req)).await?;
        Ok(wire::subscribe_reply_from_pb(reply))
    }

    async fn unsubscribe(
        &self,
        gateway: &GatewayId,
        channel: &ChannelName,
    ) -> Result<(), BrokerError> {
        let req = self.request(pb::UnsubscribeRequest {
            gateway: gateway.as_str().to_owned(),
            channel: channel.as_str().to_owned(),
        });
        call(self.client.clone().unsubscribe(req)).await?;
        Ok(())
    }

    async fn leave(&self, channel: &ChannelName, client_id: &str) -> Result<(), BrokerError> {
        let req = self.request(pb::LeaveRequest {
            channel: channel.as_str().to_owned(),
            client_id: client_id.to_owned(),
        });
        call(self.client.clone().leave(req)).await?;
        Ok(())
    }

    /// On the publish stream, bounded and failing as the unary call
    /// would: the same time limit (here, and told to the broker), the same
    /// errors; the unary call with a broker that has no stream.
    async fn publish(&self, req: PublishRequest) -> Result<Position, BrokerError> {
        if !self.publishes.unsupported() {
            let call = self.publishes.publish(
                wire::publish_to_pb(&req),
                self.ring_version(),
                CALL_TIMEOUT,
            );
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(position)) => return Ok(position),
                // Turned down before any call was read: none applied.
                Ok(Err(status)) if self.publishes.unsupported() => {
                    tracing::debug!(error = %status, "broker has no publish stream; unary publishes");
                }
                Ok(Err(status)) => return Err(wire::broker_error(&status)),
                Err(_) => return Err(BrokerError::Unavailable("call timed out".into())),
            }
        }
        let req = self.request(wire::publish_to_pb(&req));
        let reply = call(self.client.clone().publish(req)).await?;
        Ok(wire::position_from_pb(reply.position))
    }

    async fn presence(&self, req: PresenceRequest) -> Result<PresencePage, BrokerError> {
        let req = self.request(wire::presence_request_to_pb(&req));
        let reply = call(self.client.clone().presence(req)).await?;
        wire::presence_page_from_pb(reply)
    }

    async fn presence_stats(&self, channel: &ChannelName) -> Result<PresenceStats, BrokerError> {
        let req = self.request(pb::ChannelRequest {
            channel: channel.as_str().to_owned(),
        });
        let reply = call(self.client.clone().presence_stats(req)).await?;
        Ok(wire::stats_from_pb(reply))
    }

    async fn history(&self, req: HistoryRequest) -> Result<HistoryReply, BrokerError> {
        let req = self.request(wire::history_to_pb(&req));
        let reply = call(self.client.clone().history(req)).await?;
        Ok(wire::history_reply_from_pb(reply))
    }

    async fn control(&self, channel: &ChannelName, command: Control) -> Result<(), BrokerError> {
        let req = self.request(wire::control_to_pb(channel, &command));
        call(self.client.clone().control(req)).await?;
        Ok(())
    }

    async fn channels(&self, req: ChannelsRequest) -> Result<Vec<ChannelSummary>, BrokerError> {
        let req = self.request(wire::channels_to_pb(&req));
        let reply = call(self.client.clone().channels(req)).await?;
        reply
            .channels
            .into_iter()
            .map(wire::summary_from_pb)
            .collect()
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let reply = call(self.client.clone().nodes(self.request(pb::Empty {}))).await?;
        Ok(reply.nodes.into_iter().map(wire::node_from_pb).collect())
    }
}
