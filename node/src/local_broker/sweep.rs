//! The sweep: channels with no subscribers, no presence and no live
//! history are dropped, and the broker's memory gauges are updated, every
//! `broker.sweep_interval`.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::LocalBroker;
use switchboard_core::ChannelName;

impl LocalBroker {
    /// Sweeps idle channels until `shutdown`, and retires the replicated
    /// ones led here (`retirement`). Without it, channels that had history
    /// are kept until touched again.
    pub async fn maintain(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    self.sweep(Instant::now());
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = self.retire_idle() => {}
                    }
                }
            }
        }
    }

    /// Drops channels with no subscribers, no presence and no live history,
    /// but for those this broker leads as replicated with publications
    /// appended and not yet stored in the state. A led channel is idle from
    /// its creation until its first publication is committed and stored
    /// (an election and a round trip); swept then, the commit found no
    /// state to store the publication in, and the next publication made a
    /// new one, in a new epoch the replicas never heard of: acknowledged in
    /// an epoch no copy holds, and the first publication missing from the
    /// owner's history (tests/hand_back.rs, 3 runs of 42). A led channel
    /// swept with nothing pending comes back in its replica's epoch and
    /// offset ([`Self::led_state`]).
    pub fn sweep(&self, now: Instant) {
        self.inner
            .registry
            .sweep(now, |channel, stored| self.pending_beyond(channel, stored));
        self.notify_changed();
        metrics::gauge!("switchboard_broker_channels").set(self.inner.registry.len() as f64);
        if let Some(r) = self.replicated() {
            r.replicas.drop_blank();
            if let Err(e) = r.replicas.forget_abandoned(now.into_std()) {
                tracing::warn!(error = %e, "cannot forget abandoned promises");
            }
            metrics::gauge!("switchboard_replication_channels").set(r.replicas.held() as f64);
        }
        {
            let mut idempotency = self.inner.idempotency.lock();
            let (cache, charge) = &mut *idempotency;
            cache.expire(now);
            charge.set(cache.bytes());
        }
        let budget = &self.inner.budget;
        metrics::gauge!("switchboard_broker_memory_bytes").set(budget.used() as f64);
        metrics::gauge!("switchboard_broker_memory_budget_bytes").set(budget.limit() as f64);
    }

    /// Whether this broker leads `channel` as replicated with publications
    /// appended beyond `stored`, the offset its state holds.
    fn pending_beyond(&self, channel: &ChannelName, stored: u64) -> bool {
        self.replicated()
            .and_then(|r| r.replicas.next_offset(channel))
            .is_some_and(|next| next > stored + 1)
    }
}
