//! Local fan-out: which of this gateway's connections want which channel.
//!
//! The gateway holds one subscription per channel at the channel's owner on
//! behalf of all its local subscribers. The owner sends each publication
//! here once; the hub turns it into one shared frame and queues a pointer to
//! it for every local subscriber, without blocking and without copying.

use std::{collections::HashMap, sync::Arc};

use dashmap::DashMap;
use parking_lot::RwLock;
use switchboard_core::{
    Broker, BrokerError, ChannelName, Delivery, DeliveryKind, DeliverySink, GatewayId,
    SubscribeReply, SubscribeRequest,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// Identifies a connection within this gateway.
pub type ConnId = u64;

/// One delivery as queued for local connections: shared by all of them.
#[derive(Debug)]
pub struct Outgoing {
    pub channel: ChannelName,
    pub kind: DeliveryKind,
    pub text: Utf8Bytes,
    pub published_at_micros: u64,
}

/// How the hub reaches a connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub tx: mpsc::Sender<Arc<Outgoing>>,
    /// Cancelled when the connection's queue overflows: it is too slow.
    /// (The connection's own stop token: the server's shutdown cancels it
    /// too, and the connection tells the two apart.)
    pub overflow: CancellationToken,
}

#[derive(Default)]
struct HubChannel {
    subscribers: RwLock<HashMap<ConnId, ConnHandle>>,
    /// Serializes this gateway's subscribe and unsubscribe calls at the
    /// owner for the channel, so that an unsubscribe for the last local
    /// client can never overtake a subscribe for the next one.
    registration: tokio::sync::Mutex<()>,
}

pub struct Hub {
    gateway: GatewayId,
    channels: DashMap<ChannelName, Arc<HubChannel>>,
}

impl Hub {
    pub fn new(gateway: GatewayId) -> Self {
        Self {
            gateway,
            channels: DashMap::new(),
        }
    }

    pub fn gateway(&self) -> &GatewayId {
        &self.gateway
    }

    /// Adds a local subscriber and subscribes at the owner. Deliveries may
    /// reach `handle` before this returns; the caller orders them after the
    /// reply by offset.
    pub async fn subscribe<B: Broker>(
        &self,
        broker: &B,
        conn: ConnId,
        handle: ConnHandle,
        req: SubscribeRequest,
    ) -> Result<SubscribeReply, BrokerError> {
        let channel = req.channel.clone();
        let entry = {
            let entry = self.channels.entry(channel.clone()).or_default();
            entry.subscribers.write().insert(conn, handle);
            entry.clone()
        };
        let result = {
            let _registration = entry.registration.lock().await;
            broker.subscribe(req).await
        };
        if result.is_err() {
            self.unsubscribe(broker, conn, &channel).await;
        }
        result
    }

    /// Removes a local subscriber; the last one ends the subscription at the owner.
    pub async fn unsubscribe<B: Broker>(&self, broker: &B, conn: ConnId, channel: &ChannelName) {
        let Some(entry) = self.channels.get(channel).map(|e| e.clone()) else {
            return;
        };
        entry.subscribers.write().remove(&conn);
        let _registration = entry.registration.lock().await;
        if !entry.subscribers.read().is_empty() {
            return;
        }
        if let Err(e) = broker.unsubscribe(&self.gateway, channel).await {
            tracing::warn!(channel = %channel, error = %e, "unsubscribe at owner failed");
        }
        self.channels
            .remove_if(channel, |_, e| e.subscribers.read().is_empty());
    }

    /// Channels with local subscribers.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

impl DeliverySink for Hub {
    fn deliver(&self, delivery: Delivery) {
        let Some(entry) = self.channels.get(&delivery.channel).map(|e| e.clone()) else {
            return;
        };
        let text = match Utf8Bytes::try_from(delivery.frame) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(channel = %delivery.channel, error = %e, "owner sent a frame that is not UTF-8");
                return;
            }
        };
        let out = Arc::new(Outgoing {
            channel: delivery.channel,
            kind: delivery.kind,
            text,
            published_at_micros: delivery.published_at_micros,
        });
        let subscribers = entry.subscribers.read();
        for handle in subscribers.values() {
            if handle.tx.try_send(out.clone()).is_err() {
                // Full or closed: either way this connection cannot take
                // more; the connection task ends it as a slow consumer.
                if !handle.overflow.is_cancelled() {
                    telemetry::queue_drop();
                    handle.overflow.cancel();
                }
            }
        }
    }
}
