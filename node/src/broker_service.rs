//! The broker's gRPC face: `switchboard.broker.v1.Broker` served over a
//! [`LocalBroker`]. Each attached gateway gets one bounded stream; a gateway
//! that cannot keep up loses its stream (and recovers by re-attaching and
//! resubscribing with its last positions) rather than growing our memory.

use std::sync::Arc;

use parking_lot::Mutex;
use switchboard_proto::broker::v1::{self as pb, broker_server};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status};

use crate::{
    LocalBroker,
    authorization::{PeerAuth, Rpc, check},
    delivery_stream::DeliveryStream,
    handoff::Handoff,
    publish_stream::{self, AnswerStream, Publisher},
};
use switchboard_cluster::wire;
use switchboard_core::{Broker, ChannelName, Delivery, DeliverySink, GatewayId};

/// Deliveries queued per attached gateway before its stream is cut.
pub const STREAM_CAPACITY: usize = 65_536;

pub struct BrokerService {
    broker: LocalBroker,
    /// In a cluster: which channels this broker serves, and their moves.
    /// Without it (one broker on its own) every channel is served here.
    handoff: Option<Arc<Handoff>>,
    /// How publishes are applied, unary or streamed.
    publisher: Arc<Publisher>,
    /// Whether callers must prove who they are (mutual TLS).
    auth: PeerAuth,
    /// The broker process's tasks, and its end: each stream's watcher runs
    /// there.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl BrokerService {
    pub fn new(
        broker: LocalBroker,
        handoff: Option<Arc<Handoff>>,
        auth: PeerAuth,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            publisher: Arc::new(Publisher::new(broker.clone(), handoff.clone())),
            broker,
            handoff,
            auth,
            tasks,
            shutdown,
        }
    }

    /// Lets `request` through if its caller may call `rpc` acting as
    /// `acting_as` ([`check`]).
    fn check<T>(
        &self,
        request: &Request<T>,
        rpc: Rpc,
        acting_as: Option<&str>,
    ) -> Result<(), Status> {
        check(self.auth, request, rpc, acting_as)
    }

    /// Refuses a channel this broker does not own; takes over one it owns
    /// but does not hold yet.
    async fn admit(&self, channel: &ChannelName, ring: Option<u64>) -> Result<(), Status> {
        match &self.handoff {
            Some(handoff) => handoff.admit(channel, ring).await.map_err(wire::status),
            None => Ok(()),
        }
    }

    pub fn into_server(self) -> broker_server::BrokerServer<Self> {
        broker_server::BrokerServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

/// Pushes deliveries into one gateway's stream.
struct StreamSink {
    gateway: GatewayId,
    tx: Mutex<Option<mpsc::Sender<pb::Delivery>>>,
}

impl DeliverySink for StreamSink {
    fn deliver(&self, delivery: Delivery) {
        let mut tx = self.tx.lock();
        let Some(sender) = tx.as_ref() else { return };
        match sender.try_send(wire::delivery_to_pb(&delivery)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Ending the stream is the signal: the gateway re-attaches
                // and recovers from its last positions.
                tracing::warn!(gateway = %self.gateway, "gateway stream full; cutting it");
                metrics::counter!("switchboard_broker_stream_overflows_total").increment(1);
                *tx = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => *tx = None,
        }
    }
}

/// The ring version a gateway routed the request by, if it sent one.
fn ring_of<T>(request: &Request<T>) -> Option<u64> {
    request
        .metadata()
        .get(switchboard_cluster::remote_broker::RING_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

fn gateway_of(name: &str) -> Result<GatewayId, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("gateway name is empty"));
    }
    Ok(GatewayId::from(name))
}

#[tonic::async_trait]
impl broker_server::Broker for BrokerService {
    type AttachStream = DeliveryStream;

    async fn attach(
        &self,
        request: Request<pb::AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.check(&request, Rpc::Attach, Some(&request.get_ref().gateway))?;
        let request = request.into_inner();
        let gateway = gateway_of(&request.gateway)?;
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let closed = tx.clone();
        let sink: Arc<dyn DeliverySink> = Arc::new(StreamSink {
            gateway: gateway.clone(),
            tx: Mutex::new(Some(tx)),
        });
        self.broker
            .attach(gateway.clone(), sink.clone())
            .await
            .map_err(wire::status)?;
        tracing::info!(gateway = %gateway, "gateway attached");
        // The stream's end is the gateway's lease ending: its presence
        // entries go (with leave events) unless it has attached anew.
        let broker = self.broker.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                () = closed.closed() => {}
                // The process ends: nothing outlives it to release.
                () = shutdown.cancelled() => return,
            }
            tracing::info!(gateway = %gateway, "gateway stream ended");
            broker.detach_sink(&gateway, &sink);
        });
        Ok(Response::new(DeliveryStream::new(rx, request.batches)))
    }

    async fn detach(
        &self,
        request: Request<pb::DetachRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(&request, Rpc::Detach, Some(&request.get_ref().gateway))?;
        let gateway = gateway_of(&request.into_inner().gateway)?;
        self.broker.detach(&gateway).await.map_err(wire::status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeReply>, Status> {
        self.check(&request, Rpc::Subscribe, Some(&request.get_ref().gateway))?;
        let ring = ring_of(&request);
        let req = wire::subscribe_from_pb(request.into_inner())?;
        self.admit(&req.channel, ring).await?;
        let reply = self.broker.subscribe(req).await.map_err(wire::status)?;
        Ok(Response::new(wire::subscribe_reply_to_pb(reply)))
    }

    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(&request, Rpc::Unsubscribe, Some(&request.get_ref().gateway))?;
        let req = request.into_inner();
        let gateway = gateway_of(&req.gateway)?;
        let channel = wire::channel(&req.channel)?;
        self.broker
            .unsubscribe(&gateway, &channel)
            .await
            .map_err(wire::status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(&request, Rpc::Leave, None)?;
        let ring = ring_of(&request);
        let req = request.into_inner();
        let channel = wire::channel(&req.channel)?;
        self.admit(&channel, ring).await?;
        self.broker
            .leave(&channel, &req.client_id)
            .await
            .map_err(wire::status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReply>, Status> {
        self.check(&request, Rpc::Publish, None)?;
        let ring = ring_of(&request);
        let position = self.publisher.publish(request.into_inner(), ring).await?;
        Ok(Response::new(pb::PublishReply {
            position: Some(wire::position_to_pb(&position)),
        }))
    }

    type PublishStreamStream = AnswerStream;

    /// Authorized once, as a `Publish` (the caller's identity is its
    /// connection's): each call on it is then what a `Publish` would be.
    async fn publish_stream(
        &self,
        request: Request<tonic::Streaming<pb::PublishCalls>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        self.check(&request, Rpc::Publish, None)?;
        Ok(Response::new(publish_stream::serve(
            request.into_inner(),
            self.publisher.clone(),
            &self.tasks,
            self.shutdown.clone(),
        )))
    }

    async fn presence(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceReply>, Status> {
        self.check(&request, Rpc::Presence, None)?;
        let ring = ring_of(&request);
        let req = wire::presence_request_from_pb(request.into_inner())?;
        self.admit(&req.channel, ring).await?;
        let page = self.broker.presence(req).await.map_err(wire::status)?;
        Ok(Response::new(wire::presence_page_to_pb(&page)))
    }

    async fn presence_stats(
        &self,
        request: Request<pb::ChannelRequest>,
    ) -> Result<Response<pb::PresenceStatsReply>, Status> {
        self.check(&request, Rpc::PresenceStats, None)?;
        let ring = ring_of(&request);
        let channel = wire::channel(&request.into_inner().channel)?;
        self.admit(&channel, ring).await?;
        let stats = self
            .broker
            .presence_stats(&channel)
            .await
            .map_err(wire::status)?;
        Ok(Response::new(wire::stats_to_pb(stats)))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        self.check(&request, Rpc::History, None)?;
        let ring = ring_of(&request);
        let req = wire::history_from_pb(request.into_inner())?;
        self.admit(&req.channel, ring).await?;
        let reply = self.broker.history(req).await.map_err(wire::status)?;
        Ok(Response::new(wire::history_reply_to_pb(reply)))
    }

    async fn control(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(&request, Rpc::Control, None)?;
        let ring = ring_of(&request);
        let (channel, command) = wire::control_from_pb(request.into_inner())?;
        self.admit(&channel, ring).await?;
        self.broker
            .control(&channel, command)
            .await
            .map_err(wire::status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn channels(
        &self,
        request: Request<pb::ChannelsRequest>,
    ) -> Result<Response<pb::ChannelsReply>, Status> {
        self.check(&request, Rpc::Channels, None)?;
        let req = wire::channels_from_pb(request.into_inner());
        let channels = self.broker.channels(req).await.map_err(wire::status)?;
        Ok(Response::new(pb::ChannelsReply {
            channels: channels.iter().map(wire::summary_to_pb).collect(),
        }))
    }

    async fn nodes(&self, request: Request<pb::Empty>) -> Result<Response<pb::NodesReply>, Status> {
        self.check(&request, Rpc::Nodes, None)?;
        let nodes = self.broker.nodes().await.map_err(wire::status)?;
        Ok(Response::new(pb::NodesReply {
            nodes: nodes.iter().map(wire::node_to_pb).collect(),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        self.check(&request, Rpc::Release, Some(&request.get_ref().to))?;
        let req = request.into_inner();
        let channel = wire::channel(&req.channel)?;
        if req.to.is_empty() {
            return Err(Status::invalid_argument("release names no broker"));
        }
        let released = self
            .broker
            .release_for(&channel, &req.to, req.holds_copy)
            .map_err(wire::status)?;
        Ok(Response::new(wire::release_to_pb(&released)))
    }

    async fn claim(
        &self,
        request: Request<pb::ClaimRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(&request, Rpc::Claim, Some(&request.get_ref().from))?;
        let req = request.into_inner();
        let Some(handoff) = &self.handoff else {
            return Err(Status::failed_precondition(
                "this broker is not in a cluster",
            ));
        };
        let channels = req
            .channels
            .iter()
            .map(|c| wire::channel(c))
            .collect::<Result<Vec<_>, _>>()?;
        handoff.claim(&req.from, channels).await;
        Ok(Response::new(pb::Empty {}))
    }
}
