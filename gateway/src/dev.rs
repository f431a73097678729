//! The dev process: one gateway and an in-process broker ([`LocalBroker`])
//! in one process, as `switchboard dev` runs them and as the tests' in-process
//! server does. It follows the gateway's drain: on `shutdown` the gateway
//! stops accepting and drains its connections within the drain timeout;
//! then the broker's background upkeep, tracked like every other task,
//! is given the same deadline.

use switchboard_node::{BrokerConfig, LocalBroker, webhook::Webhooks};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Settings,
    server::{self, GatewayError, Listeners},
};

/// Serves clients (and the server API where `listeners` say) from a fresh
/// [`LocalBroker`] configured by `broker`, until `shutdown`; then drains.
pub async fn run(
    listeners: Listeners,
    settings: Settings,
    broker: BrokerConfig,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let drain_timeout = settings.gateway.drain_timeout;
    let broker = LocalBroker::new(broker, settings.namespaces.clone());
    // A token of its own: the upkeep also stops when the gateway fails to
    // start, not only on shutdown.
    let upkeep = shutdown.child_token();
    let tracker = TaskTracker::new();
    broker.set_webhooks(Webhooks::start(
        settings.pusher.webhook_config(),
        &tracker,
        &upkeep,
    ));
    tracker.spawn({
        let broker = broker.clone();
        let upkeep = upkeep.clone();
        async move { broker.maintain(upkeep).await }
    });
    let served = server::run_with(listeners, settings, broker, shutdown).await;
    upkeep.cancel();
    tracker.close();
    if tokio::time::timeout(drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("the broker's upkeep outlived the drain deadline");
    }
    served
}
