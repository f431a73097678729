//! The reconciler: keeps every subscription where its channel is routed
//! (its owner on the ring, or while the stream to the owner is lost, the
//! next broker of its failover order: `link::route`), moved
//! make-before-break when that changes and placed again when the broker's
//! stream was lost or it replaced the channel's state.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures_util::StreamExt;

use super::Router;
use switchboard_cluster::remote_broker::RemoteBroker;
use switchboard_core::{
    Broker, BrokerError, BrokerName, ChannelName, SubscribeReply, SubscribeRequest,
};

/// How soon subscriptions that could not be placed are tried again.
const RECONCILE_RETRY: Duration = Duration::from_millis(100);
/// How often subscriptions are checked against the ring regardless.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Subscriptions moved at once.
const RECONCILE_PARALLEL: usize = 32;

impl Router {
    /// Keeps every subscription at its channel's owner on the ring: moved
    /// make-before-break when the owner changes (subscribe at the new owner
    /// from the last delivered position, then let go of the old one), and
    /// placed again after a stream was lost. Failures are retried soon.
    pub(super) async fn reconciler(self) {
        let mut wait = RECONCILE_EVERY;
        loop {
            tokio::select! {
                biased;
                _ = self.inner.shutdown.cancelled() => return,
                _ = self.inner.reconcile.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            wait = if self.reconcile().await {
                RECONCILE_EVERY
            } else {
                RECONCILE_RETRY
            };
        }
    }

    /// One pass of [`Self::reconciler`]; whether everything is in place.
    async fn reconcile(&self) -> bool {
        let ring = self.inner.ring.read().clone();
        let lost = self.lost_links();
        let work: Vec<(ChannelName, BrokerName, BrokerName)> = self
            .inner
            .subs
            .iter()
            // Subscriptions still settling their first reply are left alone.
            // (One that holds deliveries otherwise waits for this: it met
            // a gap; passes do not overlap, so no placement is in flight.)
            .filter(|s| !s.is_first())
            .filter_map(|s| {
                let new = super::link::route(ring.failover(s.key().as_str()), &lost)?;
                (new != s.owner.as_str() || !s.placed)
                    .then(|| (s.key().clone(), s.owner.clone(), BrokerName::from(new)))
            })
            .collect();
        if work.is_empty() {
            return true;
        }
        tracing::info!(
            channels = work.len(),
            "placing subscriptions at their owners"
        );
        let failed = AtomicUsize::new(0);
        futures_util::stream::iter(work)
            .for_each_concurrent(RECONCILE_PARALLEL, |(channel, old, new)| {
                let failed = &failed;
                async move {
                    if let Err(e) = self.place(&channel, &old, &new).await {
                        tracing::debug!(channel = %channel, broker = %new, error = %e, "cannot place subscription yet");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .await;
        failed.into_inner() == 0
    }

    /// Subscribes at `new` from the last delivered position, then lets go of
    /// `old` if the owner changed.
    async fn place(
        &self,
        channel: &ChannelName,
        old: &BrokerName,
        new: &BrokerName,
    ) -> Result<(), BrokerError> {
        let remote = self
            .attached_now(new)
            .ok_or_else(|| BrokerError::Unavailable(format!("broker {new} is not attached")))?;
        let started = self.inner.subs.get(channel).map(|s| s.unplaced);
        let placed = self.resubscribe(channel, &remote, new).await;
        let moved = self
            .inner
            .subs
            .get_mut(channel)
            .map(|mut sub| {
                // The owner may have replaced the channel's state (or the
                // stream dropped) while this subscribe was in flight: then
                // it subscribed to what is gone, and must go again.
                sub.placed = placed.is_ok() && Some(sub.unplaced) == started;
                sub.owner == *new
            })
            .unwrap_or(true);
        placed?;
        if old != new && moved {
            let old_remote = self.inner.links.read().get(old).map(|l| l.remote.clone());
            if let Some(old_remote) = old_remote {
                let gateway = self.inner.gateway.get().expect("attached").clone();
                if let Err(e) = old_remote.unsubscribe(&gateway, channel).await {
                    tracing::debug!(channel = %channel, broker = %old, error = %e, "old owner unsubscribe failed");
                }
            }
        }
        Ok(())
    }

    async fn resubscribe(
        &self,
        channel: &ChannelName,
        remote: &RemoteBroker,
        at: &BrokerName,
    ) -> Result<(), BrokerError> {
        let gateway = self.inner.gateway.get().expect("attached").clone();
        let (since, clients) = {
            let Some(mut sub) = self.inner.subs.get_mut(channel) else {
                return Ok(());
            };
            sub.hold();
            sub.placing = Some(at.clone());
            (
                sub.last.clone(),
                sub.clients.values().cloned().collect::<Vec<_>>(),
            )
        };
        let req = SubscribeRequest {
            gateway: gateway.clone(),
            channel: channel.clone(),
            since: since.clone(),
            client: None,
        };
        let reply = match remote.subscribe(req).await {
            Ok(reply) => reply,
            Err(e) => {
                self.abandon_placement(channel);
                return Err(e);
            }
        };
        let put_off =
            self.inner.subs.get_mut(channel).is_some_and(|mut sub| {
                sub.puts_off(since.as_ref(), &reply, std::time::Instant::now())
            });
        if put_off {
            tracing::debug!(channel = %channel, broker = %at, offset = reply.position.offset, "the owner's copy is behind what clients were given; asking again");
            self.abandon_placement(channel);
            return Err(BrokerError::Unavailable(
                "the owner's copy is behind what clients were given".into(),
            ));
        }
        // Settled before the presence entries are placed: a failure among
        // those must not leave the subscription holding live deliveries
        // (a held subscription is never placed again, and its clients would
        // silently hear nothing more). The placement is retried instead.
        self.settle(channel, at, since.is_some(), reply);
        for client in clients {
            let req = SubscribeRequest {
                gateway: gateway.clone(),
                channel: channel.clone(),
                since: None,
                client: Some(client),
            };
            match remote.subscribe(req).await {
                Ok(_) => {}
                // The new copy's presence filled up meanwhile: the client
                // stays subscribed, out of the channel's presence.
                Err(BrokerError::PresenceFull(max)) => {
                    tracing::warn!(channel = %channel, max, "presence full; a client placed again without its presence entry");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A placement that did not settle: what waited is released, and the
    /// reconciler tries again.
    fn abandon_placement(&self, channel: &ChannelName) {
        if let Some(mut sub) = self.inner.subs.get_mut(channel) {
            sub.placing = None;
            let pending = sub.release();
            drop(sub);
            for d in pending {
                self.on_delivery(None, d);
            }
        }
    }

    /// Hands local clients what a resubscription's reply means for them.
    /// The subscription is at `at` from now on: its deliveries are the
    /// ones taken (under the entry, so that none falls between).
    fn settle(
        &self,
        channel: &ChannelName,
        at: &BrokerName,
        had_position: bool,
        reply: SubscribeReply,
    ) {
        let Some(sink) = self.sink() else { return };
        let Some(mut sub) = self.inner.subs.get_mut(channel) else {
            return;
        };
        sub.owner = at.clone();
        sub.placing = None;
        // Delivered under the entry, so that live deliveries queue behind.
        for d in sub.settle_reply(channel, had_position, reply) {
            sink.deliver(d);
        }
    }
}
