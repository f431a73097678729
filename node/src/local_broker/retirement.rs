//! The leader's side of retiring idle replicated channels
//! (docs/replication.md "Retiring an idle channel"): after each sweep, the
//! channels this broker leads whose state the sweep dropped, with nothing
//! pending and every publication past its history TTL and idempotency
//! window, are forgotten here, and then at every other broker their
//! configuration names.

use std::time::Duration;

use futures_util::{StreamExt, stream::FuturesUnordered};
use switchboard_proto::replica::v1 as pb;

use super::{LocalBroker, replicated::Replicated};
use crate::replica::{election::Dial, retirement::Retiring};

/// Channels retired, and retirements told, per sweep at most: a broker
/// that is down holds each ask for [`CALL_TIMEOUT`], and the sweep waits
/// for them.
const BATCH: usize = 256;

/// How long one voter may take to answer.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

impl LocalBroker {
    /// Retires up to [`BATCH`] idle channels led here, then tells their
    /// other brokers, with those told too few so far; returns how many
    /// were retired.
    pub async fn retire_idle(&self) -> usize {
        let Some(r) = self.replicated() else {
            return 0;
        };
        let now = self.wall_micros();
        let registry = &self.inner.registry;
        let key_window = self.inner.config.idempotency_window;
        let candidates = r.replicas.retirable(now, key_window, BATCH, |channel| {
            !registry.contains(channel)
        });
        let retired = candidates.iter().filter(|t| self.retire_here(r, t)).count();
        if retired > 0 {
            metrics::counter!("switchboard_replication_retired_total").increment(retired as u64);
        }
        let me = r.replicas.me().to_string();
        let untold = r.replicas.untold(BATCH);
        // One client per broker, kept across batches (`PeerClients`).
        let dial = &*r.dial;
        let mut asks: FuturesUnordered<_> = untold
            .into_iter()
            .map(|t| {
                let me = &me;
                async move {
                    let all = retired_by_all(dial, me, &t).await;
                    (t, all)
                }
            })
            .collect();
        while let Some((t, all)) = asks.next().await {
            if all {
                r.replicas.told(&t.channel);
            }
        }
        retired
    }

    /// Retires `t` here first, if no state was made for it meanwhile
    /// (under the registry's lock for the channel, so that none is made
    /// while it goes: a state made from the replica log just before would
    /// be served unreplicated after).
    fn retire_here(&self, r: &Replicated, t: &Retiring) -> bool {
        let retired = self
            .inner
            .registry
            .unless_present(&t.channel, || r.replicas.retire_led(t));
        match retired {
            Some(Ok(true)) => {
                tracing::debug!(channel = %t.channel, term = %t.config.term, "retired");
                true
            }
            Some(Err(e)) => {
                tracing::warn!(channel = %t.channel, error = %e, "idle channel not retired");
                false
            }
            _ => false,
        }
    }
}

/// Asks every broker `t`'s configuration names (voters and holders) but
/// this broker to retire it; true if every one forgot it. One that cannot
/// be reached keeps the channel here too, until it can.
async fn retired_by_all(dial: Dial<'_>, me: &str, t: &Retiring) -> bool {
    let everyone: std::collections::BTreeSet<_> = t.config.everyone().collect();
    let asks = everyone
        .into_iter()
        .filter(|v| v.as_str() != me)
        .map(|v| async move {
            let mut client = dial(v)?;
            let req = pb::RetireRequest {
                channel: t.channel.to_string(),
                term: t.config.term.0,
                leader: me.to_owned(),
                end: t.end,
            };
            let reply = tokio::time::timeout(CALL_TIMEOUT, client.retire(req)).await;
            let reply = reply.ok()?.ok()?.into_inner();
            // One that knows a later configuration keeps the channel, which
            // went on there under a later leader: nothing more to tell it.
            // A bare later promise is not that: ask again.
            Some(reply.forgotten || reply.configured > t.config.term.0)
        });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .all(|done| done == Some(true))
}
