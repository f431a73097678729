//! One link per broker: the client that calls it, and the delivery stream
//! kept open (re-attached with backoff after each loss, which sends every
//! subscription placed there to the reconciler again).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Router;
use switchboard_cluster::{remote_broker::RemoteBroker, wire};
use switchboard_core::BrokerName;

/// How long a call waits for the owner's stream to be attached.
pub(super) const ATTACH_WAIT: Duration = Duration::from_secs(2);

/// Reconnect backoff bounds for a lost stream.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(super) struct Link {
    pub(super) addr: String,
    pub(super) remote: RemoteBroker,
    pub(super) attached: watch::Receiver<bool>,
    /// Ends this link's stream task when the broker leaves the ring.
    pub(super) stop: CancellationToken,
    /// Held until the stream task starts (at attach, or when the broker
    /// joins later).
    pub(super) starter: Option<watch::Sender<bool>>,
}

impl Router {
    pub(super) fn start_link(&self, name: &BrokerName, link: &mut Link) {
        if let Some(tx) = link.starter.take() {
            self.inner.tasks.spawn(self.clone().run_link(
                name.clone(),
                link.remote.clone(),
                tx,
                link.stop.clone(),
            ));
        }
    }

    /// The client of `broker` if its stream is up now.
    pub(super) fn attached_now(&self, broker: &BrokerName) -> Option<RemoteBroker> {
        let links = self.inner.links.read();
        let link = links.get(broker)?;
        (*link.attached.borrow()).then(|| link.remote.clone())
    }

    /// Clients of every broker in the ring whose stream is up.
    pub(super) async fn reachable(&self) -> Vec<RemoteBroker> {
        let names = self.brokers();
        let mut out = Vec::new();
        for name in names {
            if let Some(remote) = self.wait_attached(&name).await {
                out.push(remote);
            }
        }
        out
    }

    /// The client of `broker` once its stream is up, within [`ATTACH_WAIT`].
    pub(super) async fn wait_attached(&self, broker: &BrokerName) -> Option<RemoteBroker> {
        let (remote, mut attached) = {
            let links = self.inner.links.read();
            let link = links.get(broker)?;
            (link.remote.clone(), link.attached.clone())
        };
        match tokio::time::timeout(ATTACH_WAIT, attached.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Some(remote),
            _ => None,
        }
    }

    /// Keeps the stream to one broker open, resubscribing after each loss.
    async fn run_link(
        self,
        name: BrokerName,
        remote: RemoteBroker,
        attached: watch::Sender<bool>,
        stop: CancellationToken,
    ) {
        let gateway = self
            .inner
            .gateway
            .get()
            .expect("attached before links run")
            .clone();
        let mut backoff = BACKOFF_MIN;
        loop {
            let opened = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                opened = remote.open_stream(&gateway) => opened,
            };
            match opened {
                Ok(mut stream) => {
                    backoff = BACKOFF_MIN;
                    attached.send_replace(true);
                    // After a loss, the broker may have forgotten us (or be
                    // a restarted process): place again what it holds.
                    for mut sub in self.inner.subs.iter_mut() {
                        if sub.owner == name {
                            sub.unplace();
                        }
                    }
                    self.inner.reconcile.notify_one();
                    loop {
                        tokio::select! {
                        biased;
                                    _ = stop.cancelled() => return,
                                    item = stream.next() => match item {
                                        Some(Ok(d)) => {
                                            for d in wire::deliveries_from_pb(d) {
                                                match d {
                                                    Ok(d) => self.on_delivery(Some(&name), d),
                                                    Err(e) => tracing::warn!(broker = %name, error = %e, "bad delivery"),
                                                }
                                            }
                                        }
                                        Some(Err(e)) => {
                                            tracing::warn!(broker = %name, error = %e, "stream failed");
                                            break;
                                        }
                                        None => {
                                            tracing::warn!(broker = %name, "stream ended");
                                            break;
                                        }
                                    },
                                }
                    }
                    attached.send_replace(false);
                }
                Err(e) => tracing::debug!(broker = %name, error = %e, "cannot open stream"),
            }
            // Full jitter, so that many gateways do not retry in step.
            let wait = backoff.mul_f64(self.jitter());
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
