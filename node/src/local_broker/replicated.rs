//! Publishing to a channel this broker leads as a replicated channel
//! (docs/replication.md): the publication is appended to the replica log
//! under the channel's lock, sent to the followers, and acknowledged,
//! stored in history and delivered only once every follower stored it.
//! Whoever sees a commit first delivers every committed offset not yet
//! delivered, in order, so concurrent publishes never reorder.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{LocalBroker, channel_state::ChannelState};
use crate::replica::{Entry, Replicas, peer_stream::PeerStreams, read_lease::ReadRefused};
use switchboard_core::{
    BrokerError, ChannelName, DeliveryKind, NamespaceOptions, Position, PublishRequest,
    frame::push as frame,
};

/// How long a publish waits for its replicas before it is refused (the
/// gateway retries with the same idempotency key, or the client does).
/// Shorter than a gateway's call (3 s), so that the gateway hears why.
pub const COMMIT_WAIT: Duration = Duration::from_millis(2500);

/// This broker's replication, as its channels' owner uses it.
#[derive(Clone)]
pub struct Replicated {
    pub replicas: Arc<Replicas>,
    pub streams: Arc<PeerStreams>,
    /// How its elections reach other brokers.
    pub dial: crate::replica::peer_stream::SharedDial,
    /// Brokers that store each channel (`broker.replication_factor`).
    pub factor: usize,
    /// `broker.lost_majority`: serve or refuse a channel that cannot be
    /// replicated from here.
    pub lost_majority: switchboard_cluster::replication::LostMajority,
    /// Channels refused while their newer copy is held elsewhere.
    pub deferrals: Arc<parking_lot::Mutex<crate::deferral::Deferrals>>,
}

impl LocalBroker {
    /// A new state for `name` if this broker leads it as replicated (its
    /// state was swept while idle): in the epoch its replica log is of, at
    /// the offset committed there, with the history it had (none: an idle
    /// channel's history has expired). A new epoch there would be one no
    /// replica holds.
    pub(super) fn led_state(
        &self,
        name: &ChannelName,
        options: &NamespaceOptions,
    ) -> Option<ChannelState> {
        let r = self.replicated()?;
        let term = r.replicas.leads(name)?;
        let (_, _, committed, epoch) = r.replicas.state(name)?;
        let epoch = epoch?;
        let mut s = ChannelState::new(
            name.clone(),
            options.clone(),
            epoch.id,
            epoch.created_micros,
            &self.inner.budget,
        );
        s.offset = committed;
        s.copy_term = term;
        Some(s)
    }

    /// Holds a read of `channel` until this broker, if it leads the channel
    /// replicated, does so under a majority's leases
    /// (`Replicas::read_lease`): refused `Unavailable` (the gateway asks
    /// again) if none comes back within a lease, `NotOwner` if it stopped
    /// leading meanwhile.
    pub(super) async fn read_lease(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let Some(r) = self.replicated() else {
            return Ok(());
        };
        r.replicas.read_lease(channel).await.map_err(|e| match e {
            ReadRefused::SteppedDown => not_led(),
            ReadRefused::NoMajorityLease => BrokerError::Unavailable(e.to_string()),
        })
    }

    /// Replicates the channels this broker leads from now on.
    pub fn set_replicated(&self, replicated: Replicated) {
        let _ = self.inner.replicated.set(replicated);
    }

    pub fn replicated(&self) -> Option<&Replicated> {
        self.inner.replicated.get()
    }

    /// The host's wall clock, µs since the Unix epoch.
    pub fn wall_micros(&self) -> u64 {
        self.inner.host.wall_micros()
    }

    /// `channel`'s epoch and when it began, if it is held here.
    pub fn epoch_of(&self, channel: &ChannelName) -> Option<(String, u64)> {
        let s = self.inner.registry.lock_existing(channel)?;
        Some((s.epoch.clone(), s.created_micros))
    }

    /// The epoch and offset of `channel` as held here, if it is.
    pub fn held_at(&self, channel: &ChannelName) -> Option<(String, u64)> {
        let s = self.inner.registry.lock_existing(channel)?;
        Some((s.epoch.clone(), s.offset))
    }

    /// [`switchboard_core::Broker::publish`] for a channel led here.
    pub(super) async fn publish_replicated(
        &self,
        r: &Replicated,
        req: PublishRequest,
    ) -> Result<(Position, bool), BrokerError> {
        let published_micros = self.inner.host.wall_micros();
        let appended = self.with_channel(&req.channel, |s| {
            let key = req
                .idempotency_key
                .as_ref()
                .map(|k| (req.channel.clone(), k.clone()));
            let offset = r.replicas.next_offset(&s.name).ok_or(not_led())?;
            if let Some(key) = &key {
                let mut idempotency = self.inner.idempotency.lock();
                if let Some(original) = idempotency.0.get(key, Instant::now()) {
                    if in_log(r, s, original, &key.1, offset) {
                        return Ok(Err(original.clone()));
                    }
                    // Appended in an earlier term and dropped since (it
                    // was never committed): it is published anew.
                    idempotency.0.forget(key);
                }
            }
            let bytes = frame::publication(
                &s.name,
                &req.from,
                &req.data,
                offset,
                &s.epoch,
                published_micros / 1000,
            );
            let entry = Entry {
                frame: bytes,
                idempotency_key: req.idempotency_key.clone(),
                published_micros,
            };
            let appended = r
                .replicas
                .append_led(&s.name, entry)
                .map_err(|_| not_led())?;
            let position = Position {
                offset: appended.offset,
                epoch: s.epoch.clone(),
            };
            // Remembered now: a retry while this one waits for its
            // replicas must not be appended again.
            if let Some(key) = key {
                let mut idempotency = self.inner.idempotency.lock();
                let (cache, charge) = &mut *idempotency;
                cache.insert(key, position.clone(), Instant::now());
                charge.set(cache.bytes());
            }
            self.published(s, &req.data);
            Ok(Ok((appended, position)))
        })??;
        let (appended, position) = match appended {
            Ok(pending) => pending,
            Err(original) => {
                // A retry is answered only once the first is committed too:
                // an answer is an acknowledgement.
                let committed = r.replicas.committed(&req.channel).ok_or(not_led())?;
                self.await_commit(r, &req.channel, committed, original.offset)
                    .await?;
                return Ok((original, false));
            }
        };
        r.streams.send(appended.outgoing);
        self.await_commit(r, &req.channel, appended.committed, appended.offset)
            .await?;
        Ok((position, true))
    }

    /// Waits until `offset` is committed (stored on every replica), then
    /// delivers what is committed and not yet delivered.
    async fn await_commit(
        &self,
        r: &Replicated,
        channel: &ChannelName,
        mut committed: tokio::sync::watch::Receiver<u64>,
        offset: u64,
    ) -> Result<(), BrokerError> {
        match tokio::time::timeout(COMMIT_WAIT, committed.wait_for(|c| *c >= offset)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(not_led()),
            Err(_) => {
                return Err(BrokerError::Unavailable(
                    "not stored on every replica in time".into(),
                ));
            }
        }
        let upto = *committed.borrow();
        self.deliver_committed(r, channel, upto);
        Ok(())
    }

    /// Leads `channel` in `config`'s term, just won in `epoch`, unless it
    /// was handed over meanwhile: an election runs without the channel's
    /// lock, and a pull may take the channel during it. Under the lock, so
    /// a hand-over either finds the leadership and steps it down, or comes
    /// after. The copy descends from that term from now on, led or not.
    pub fn lead_won(
        &self,
        r: &Replicated,
        channel: &ChannelName,
        config: &switchboard_cluster::replication::ReplicaConfig,
        epoch: crate::replica::Epoch,
    ) -> Result<(), BrokerError> {
        let handed_over = || BrokerError::NotOwner { owner: None };
        let outgoing = self
            .with_existing(channel, |s| {
                if s.is_fenced() {
                    return Err(handed_over());
                }
                let out = r
                    .replicas
                    .lead(channel, config, epoch)
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                s.copy_term = s.copy_term.max(config.term);
                Ok(out)
            })
            .unwrap_or_else(|| Err(handed_over()))?;
        r.streams.send(outgoing);
        Ok(())
    }

    /// Stops leading `channel` (no majority of its voters is left): what
    /// was committed is stored and delivered, and the channel is served
    /// unreplicated from there; publishes waiting for a commit fail.
    pub fn stop_leading(&self, r: &Replicated, channel: &ChannelName) {
        self.with_existing(channel, |s| {
            if let Some(committed) = r.replicas.step_down(channel, "no majority of voters left") {
                catch_up(r, s, committed);
            }
        });
    }

    /// Stores and delivers every offset of `channel` up to `upto` not yet
    /// delivered, in order, under the channel's lock.
    fn deliver_committed(&self, r: &Replicated, channel: &ChannelName, upto: u64) {
        self.with_existing(channel, |s| catch_up(r, s, upto));
    }
}

/// Stores and delivers every offset of the channel `s` (locked) up to
/// `upto` not yet delivered, in order.
pub(super) fn catch_up(r: &Replicated, s: &mut ChannelState, upto: u64) {
    while s.offset < upto {
        let offset = s.offset + 1;
        let Some(entry) = r.replicas.entry(&s.name, offset) else {
            break;
        };
        s.offset = offset;
        s.store(offset, Instant::now(), entry.frame.clone());
        s.deliver(
            DeliveryKind::Publication { offset },
            entry.frame,
            entry.published_micros,
        );
    }
}

/// Whether the publication `original` remembers for `key` is the one
/// `s`'s log holds at its offset (`next` is the log's next offset): an
/// entry appended by an earlier leadership and never committed may have
/// been dropped, and another publication stored at its offset since.
/// Offsets before the log's window were committed, and are taken as read.
fn in_log(
    r: &Replicated,
    s: &super::channel_state::ChannelState,
    original: &Position,
    key: &str,
    next: u64,
) -> bool {
    if original.epoch != s.epoch || original.offset >= next {
        return false;
    }
    r.replicas
        .entry(&s.name, original.offset)
        .is_none_or(|e| e.idempotency_key.as_deref() == Some(key))
}

fn not_led() -> BrokerError {
    BrokerError::NotOwner { owner: None }
}
