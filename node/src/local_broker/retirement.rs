//! The leader's side of retiring idle replicated channels
//! (docs/replication.md "Retiring an idle channel"): after each sweep, the
//! channels this broker leads whose state the sweep dropped, with nothing
//! pending and every publication past its history TTL and idempotency
//! window, are retired at
//! every other voter of their term and then forgotten here.

use std::time::Duration;

use futures_util::{StreamExt, stream::FuturesUnordered};
use switchboard_proto::replica::v1 as pb;

use super::{LocalBroker, replicated::Replicated};
use crate::replica::{election::Dial, retirement::Retiring};

/// Channels asked per sweep at most: a voter that is down holds each ask
/// for [`CALL_TIMEOUT`], and the sweep waits for them.
const BATCH: usize = 64;

/// How long one voter may take to answer.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

impl LocalBroker {
    /// Retires up to [`BATCH`] idle channels led here; returns how many
    /// were forgotten.
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
        let dial = &*r.dial;
        let me = r.replicas.me().to_string();
        let mut asks: FuturesUnordered<_> = candidates
            .into_iter()
            .map(|t| {
                let me = &me;
                async move {
                    let all = retired_by_voters(dial, me, &t).await;
                    (t, all)
                }
            })
            .collect();
        let mut forgotten = 0;
        while let Some((t, all)) = asks.next().await {
            if all && self.forget_retired(r, &t) {
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            metrics::counter!("switchboard_replication_retired_total").increment(forgotten as u64);
        }
        forgotten
    }

    /// Forgets `t` here, if no state was made for it meanwhile (under the
    /// registry's lock for the channel, so that none is made while it goes:
    /// a state made from the replica log just before would be served
    /// unreplicated after).
    fn forget_retired(&self, r: &Replicated, t: &Retiring) -> bool {
        let forgot = self
            .inner
            .registry
            .unless_present(&t.channel, || r.replicas.forget_led(t));
        match forgot {
            Some(Ok(true)) => {
                tracing::debug!(channel = %t.channel, term = %t.config.term, "retired at every voter");
                true
            }
            Some(Err(e)) => {
                tracing::warn!(channel = %t.channel, error = %e, "retired channel not forgotten");
                false
            }
            _ => false,
        }
    }
}

/// Asks every voter of `t`'s term but this broker to retire it; true if
/// every one forgot it.
async fn retired_by_voters(dial: Dial<'_>, me: &str, t: &Retiring) -> bool {
    let asks = t
        .config
        .voters()
        .into_iter()
        .filter(|v| v.as_str() != me)
        .map(|v| async move {
            let mut client = dial(&v)?;
            let req = pb::RetireRequest {
                channel: t.channel.to_string(),
                term: t.config.term.0,
                leader: me.to_owned(),
                end: t.end,
            };
            let reply = tokio::time::timeout(CALL_TIMEOUT, client.retire(req)).await;
            Some(reply.ok()?.ok()?.into_inner().forgotten)
        });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .all(|forgotten| forgotten == Some(true))
}
