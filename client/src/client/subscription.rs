//! [`Subscription`]: the application's handle on one channel subscription.
//! It reads the events the connection queues for it and sends the
//! channel's requests through the [`Client`] it came from.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::Client;
use crate::{
    error::ClientError,
    frame::{ClientInfo, History, HistoryOptions, Position, PresenceStats},
    subscription::SubscriptionEvent,
};

/// The application's end of a subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    channel: String,
    id: u64,
    events: mpsc::Receiver<SubscriptionEvent>,
    client: Client,
    active: bool,
}

impl Subscription {
    pub(crate) fn new(
        channel: String,
        id: u64,
        events: mpsc::Receiver<SubscriptionEvent>,
        client: Client,
    ) -> Self {
        Self {
            channel,
            id,
            events,
            client,
            active: true,
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event; `None` once the subscription is over.
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }

    /// The next event, or `None` if none comes within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<SubscriptionEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Stops the subscription and waits until the client has let go of it.
    pub async fn unsubscribe(mut self) {
        self.active = false;
        self.client.unsubscribe(&self.channel, self.id).await;
    }

    pub async fn publish(&self, data: impl Serialize) -> Result<Position, ClientError> {
        self.client.publish(&self.channel, data).await
    }

    pub async fn presence(&self) -> Result<Vec<ClientInfo>, ClientError> {
        self.client.presence(&self.channel).await
    }

    pub async fn presence_stats(&self) -> Result<PresenceStats, ClientError> {
        self.client.presence_stats(&self.channel).await
    }

    pub async fn history(&self, options: HistoryOptions) -> Result<History, ClientError> {
        self.client.history(&self.channel, options).await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.active {
            // Best effort without blocking; if the command queue is full, the
            // connection notices the closed receiver and unsubscribes then.
            self.client.unsubscribe_soon(&self.channel, self.id);
        }
    }
}
