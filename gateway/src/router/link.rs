//! One link per broker: the client that calls it, and the delivery stream
//! kept open (re-attached with backoff after each loss, which sends every
//! subscription placed there to the reconciler again).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

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
    /// Its stream was open and broke, and is not open again: calls for its
    /// channels go to the next broker of their failover order meanwhile.
    pub(super) lost: Arc<AtomicBool>,
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
                (tx, link.lost.clone()),
                link.stop.clone(),
            ));
        }
    }

    /// Brokers whose stream is lost now. Only a router that follows
    /// gossip routes around them: its brokers replicate and check the ring
    /// before they serve. A static router's brokers serve whatever they
    /// are asked for, so the next one would start the channel anew.
    pub(super) fn lost_links(&self) -> Vec<BrokerName> {
        if self.inner.ring_version.is_none() {
            return Vec::new();
        }
        let links = self.inner.links.read();
        links
            .iter()
            .filter(|(_, l)| l.lost.load(Ordering::Relaxed))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Calls waiting for an owner and the reconciler look again: where
    /// channels are routed changed (a stream was lost or came back).
    fn rerouted(&self) {
        self.inner.rings.send_modify(|n| *n += 1);
        self.inner.reconcile.notify_one();
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
        (attached, lost): (watch::Sender<bool>, Arc<AtomicBool>),
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
                    if lost.swap(false, Ordering::Relaxed) {
                        self.rerouted();
                    }
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
                    lost.store(true, Ordering::Relaxed);
                    self.rerouted();
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

/// Where a channel's calls go (fast failover, docs/replication.md): the
/// first broker of its failover order (the ring's owner first) whose
/// stream is not lost. A killed broker resets its connections at once, so
/// a gateway knows of its death before gossip does; with replication the
/// next broker of the order is the one that takes its channels over, and
/// it serves them as soon as it has (a broker that does not lead the
/// channel refuses with `NotOwner`, and the call is asked again). With
/// every stream lost, the owner.
pub(super) fn route<'a>(
    mut failover: impl Iterator<Item = &'a str>,
    lost: &[BrokerName],
) -> Option<&'a str> {
    let owner = failover.next()?;
    let is_lost = |b: &str| lost.iter().any(|l| l.as_str() == b);
    if !is_lost(owner) {
        return Some(owner);
    }
    failover.find(|b| !is_lost(b)).or(Some(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_goes_to_the_first_broker_of_its_order_whose_stream_is_not_lost() {
        let order = ["b1", "b2", "b3"];
        let lost = |names: &[&str]| {
            names
                .iter()
                .map(|&n| BrokerName::from(n))
                .collect::<Vec<_>>()
        };
        assert_eq!(route(order.into_iter(), &[]), Some("b1"));
        assert_eq!(route(order.into_iter(), &lost(&["b2"])), Some("b1"));
        assert_eq!(route(order.into_iter(), &lost(&["b1"])), Some("b2"));
        assert_eq!(route(order.into_iter(), &lost(&["b1", "b2"])), Some("b3"));
        assert_eq!(
            route(order.into_iter(), &lost(&["b1", "b2", "b3"])),
            Some("b1")
        );
        assert_eq!(route(std::iter::empty(), &[]), None);
    }
}
