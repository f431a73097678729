//! [`Replicas`]: this broker as a voter and data replica of channels led
//! elsewhere (docs/replication.md). It drives the sans-IO core
//! ([`switchboard_cluster::replication`]): one [`Register`] and one
//! [`ReplicaLog`] per channel, with the register's durable part written to
//! the [`RegisterStore`] before any answer that depends on it leaves.
//!
//! - `service`: the `switchboard.replica.v1.Replica` gRPC service over it.
//! - `wire`: its messages to and from protobuf.
//! - `leading`: the leader's side of a channel: leading a won
//!   configuration, appending, and what members' answers mean (no IO).
//! - `peer_stream`: the leader's one `Replicate` stream per member.
//! - `peer_clients`: one client per broker for calls (votes, retirements).
//! - `takeover`: the channel as a follower's log holds it, for the term
//!   it won.
//! - `handed`: the log that comes with a channel its leader handed over
//!   (a planned move), to stand on the leader's term with.
//! - `retirement`: forgetting a channel that went idle, at every voter
//!   and last at its leader.
//! - `abandoned`: forgetting a promise whose candidacy got no further.
//! - `read_lease`: reads of a led channel only under a majority's leases.
//! - `election`: standing for a new term of a channel over the network
//!   (prepare and accept rounds at the voters, this broker's own register
//!   among them).
//!
//! A broker without a data directory keeps no registers: it refuses every
//! vote (a voter that forgot a promise after a restart could vote twice
//! for one term), and so can be neither a voter nor a data replica.

pub mod abandoned;
pub mod election;
pub mod handed;
pub mod leading;
pub mod peer_clients;
pub mod peer_stream;
pub mod read_lease;
pub mod retirement;
pub mod service;
mod standing;
pub mod takeover;
pub mod wire;

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_cluster::replication::{
    AppendReply, Candidacy, Ineligible, Plan, PrepareReply, Register, ReplicaConfig, ReplicaLog,
    Term, Vigil,
};
use switchboard_core::{BrokerName, ChannelName, Namespaces};

use crate::register_store::RegisterStore;

/// The lease a voter grants a leader with each renewal (docs/replication.md).
/// A killed leader's channels wait this long, at most, for a successor: the
/// 1 s failover target leaves room for the election beside it.
pub const LEASE: Duration = Duration::from_millis(600);

/// One publication as a data replica stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub frame: Bytes,
    pub idempotency_key: Option<String>,
    pub published_micros: u64,
}

/// The channel's epoch as the leader sent it: a follower that takes over
/// goes on in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub id: String,
    pub created_micros: u64,
}

/// One channel at this replica.
struct ReplicaChannel {
    register: Register,
    log: ReplicaLog<Entry>,
    epoch: Option<Epoch>,
    /// While this broker leads the channel.
    leading: Option<leading::Leading>,
    /// Candidacies of this broker for the channel being decided now
    /// ([`election::stand`]).
    standing: u32,
    /// The highest promise a voter refused this broker's candidacy with,
    /// naming no configuration: the next candidacy stands above it.
    outbid: Term,
}

/// Why a replication request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("this broker has no data directory: it keeps no votes")]
    NoDataDir,
    #[error("cannot record the vote: {0}")]
    Store(#[from] std::io::Error),
    #[error(transparent)]
    Channel(#[from] switchboard_core::BrokerError),
    #[error("may not stand: {0}")]
    Ineligible(#[from] Ineligible),
    #[error("no failover order to stand on")]
    NoBrokers,
    #[error("this broker does not lead the channel")]
    NotLeader,
}

/// An append from the leader of `term`.
#[derive(Debug, Clone)]
pub struct Append {
    pub term: Term,
    pub offset: u64,
    pub entry: Entry,
    pub committed: u64,
    /// The first offset the leader's log holds.
    pub log_start: u64,
}

/// This broker's registers and replica logs, by channel.
pub struct Replicas {
    me: BrokerName,
    namespaces: Namespaces,
    lease: Duration,
    /// When this process started: registers read back from the store
    /// refuse every candidate until one lease after it.
    started: Instant,
    channels: Mutex<HashMap<ChannelName, ReplicaChannel>>,
    store: Option<Mutex<RegisterStore>>,
    /// The leaders this broker follows, and when to stand for their
    /// channels.
    vigil: Mutex<Vigil>,
    /// Where the next search for channels to retire starts.
    retire_cursor: std::sync::atomic::AtomicUsize,
    /// Channels this broker retired as their leader whose other brokers
    /// have not all heard of it yet (`retirement`).
    retired: Mutex<HashMap<ChannelName, retirement::Retiring>>,
    /// Bare promises seen by the last sweeps (`abandoned`).
    abandoned: Mutex<abandoned::Marks>,
    /// Reads waiting for a majority's leases (`read_lease`).
    lease_waiters: read_lease::LeaseWaiters,
}

/// How long a leader may be silent (no append, no renewal) before its
/// followers stand for its channels: two missed renewals.
pub const SILENCE: Duration = Duration::from_millis(1500);

impl Replicas {
    /// `me`'s replicas, shared, with registers kept in `data_dir` (none:
    /// no votes).
    pub fn open(
        me: BrokerName,
        namespaces: Namespaces,
        data_dir: Option<&Path>,
    ) -> std::io::Result<Arc<Self>> {
        Self::open_in(me, namespaces, data_dir).map(Arc::new)
    }

    /// [`Self::open`] with registers kept in `data_dir`.
    pub fn open_in(
        me: BrokerName,
        namespaces: Namespaces,
        data_dir: Option<&Path>,
    ) -> std::io::Result<Self> {
        let started = Instant::now();
        let store = data_dir.map(RegisterStore::open).transpose()?;
        let mut channels = HashMap::new();
        if let Some(store) = &store {
            for channel in store.channels() {
                if let Some(register) = store.restore(channel, LEASE, started) {
                    // The log was in memory: lost with the process.
                    let log = ReplicaLog::lost();
                    let restored = ReplicaChannel {
                        register,
                        log,
                        epoch: None,
                        leading: None,
                        standing: 0,
                        outbid: Term::ZERO,
                    };
                    channels.insert(channel.clone(), restored);
                }
            }
            tracing::info!(dir = %store.dir().display(), registers = channels.len(), "replication registers restored");
        }
        Ok(Self {
            me,
            namespaces,
            lease: LEASE,
            started,
            channels: Mutex::new(channels),
            store: store.map(Mutex::new),
            vigil: Mutex::new(Vigil::new()),
            retire_cursor: Default::default(),
            retired: Default::default(),
            abandoned: Default::default(),
            lease_waiters: Default::default(),
        })
    }

    pub fn me(&self) -> &BrokerName {
        &self.me
    }

    /// Whether this broker may vote (it has a data directory).
    pub fn votes(&self) -> bool {
        self.store.is_some()
    }

    /// Runs `f` on `channel`'s replica state (created empty if new), then
    /// saves its register if `f` says it changed.
    fn with<T>(
        &self,
        channel: &ChannelName,
        f: impl FnOnce(&mut ReplicaChannel, &BrokerName) -> (T, bool),
    ) -> Result<T, ReplicaError> {
        self.with_entry(channel, true, f)
    }

    /// [`Self::with`] for what changes no register (appends, renewals): a
    /// channel not held here is answered as a fresh one would be, and not
    /// made, so that a leader's messages for a channel this broker retired
    /// do not bring it back (the answer sends a new configuration first).
    fn with_held<T>(
        &self,
        channel: &ChannelName,
        f: impl FnOnce(&mut ReplicaChannel, &BrokerName) -> (T, bool),
    ) -> Result<T, ReplicaError> {
        self.with_entry(channel, false, f)
    }

    fn with_entry<T>(
        &self,
        channel: &ChannelName,
        create: bool,
        f: impl FnOnce(&mut ReplicaChannel, &BrokerName) -> (T, bool),
    ) -> Result<T, ReplicaError> {
        let store = self.store.as_ref().ok_or(ReplicaError::NoDataDir)?;
        self.namespaces.options(channel)?;
        let mut channels = self.channels.lock();
        let held = create || channels.contains_key(channel);
        let mut scratch = None;
        let c = match channels.get_mut(channel) {
            Some(c) => c,
            None if !create => scratch.insert(self.fresh(store, channel)),
            None => {
                tracing::debug!(channel = %channel, "replication state made");
                let fresh = self.fresh(store, channel);
                channels.entry(channel.clone()).or_insert(fresh)
            }
        };
        let (out, changed) = f(c, &self.me);
        if changed && held {
            // Before the answer leaves: a vote must survive a crash.
            store.lock().save(channel, &c.register)?;
        }
        Ok(out)
    }

    /// The state of `channel`, new here: its register votes only above the
    /// terms of every register this broker forgot in its bucket.
    fn fresh(&self, store: &Mutex<RegisterStore>, channel: &ChannelName) -> ReplicaChannel {
        let floor = store.lock().floor(channel);
        ReplicaChannel {
            register: Register::above(self.lease, floor),
            log: ReplicaLog::above(floor),
            epoch: None,
            leading: None,
            standing: 0,
            outbid: Term::ZERO,
        }
    }

    /// `Prepare{term}` from `candidate`.
    pub fn prepare(
        &self,
        channel: &ChannelName,
        candidate: &BrokerName,
        term: Term,
    ) -> Result<PrepareReply, ReplicaError> {
        let now = Instant::now();
        self.with(channel, |c, me| {
            let log_end = c
                .register
                .config()
                .is_some_and(|cfg| cfg.is_data_replica(me))
                .then(|| c.log.end());
            let before = (c.register.promised(), c.register.promised_to().cloned());
            let reply = c.register.on_prepare(now, candidate, term, log_end);
            let changed = before != (c.register.promised(), c.register.promised_to().cloned());
            (reply, changed)
        })
    }

    /// `Commit{config}`: whether it was accepted, and the promise after it.
    pub fn commit(
        &self,
        channel: &ChannelName,
        config: &ReplicaConfig,
    ) -> Result<(bool, Term), ReplicaError> {
        self.with(channel, |c, _| {
            let accepted = c.register.on_commit(config);
            ((accepted, c.register.promised()), accepted)
        })
    }

    /// `Adopt{config, leader_end}`: the leader's configuration, applied to
    /// the register; a follower's log then follows the term.
    pub fn adopt(
        &self,
        channel: &ChannelName,
        config: &ReplicaConfig,
        leader_end: u64,
        epoch: Epoch,
    ) -> Result<bool, ReplicaError> {
        self.with(channel, |c, me| {
            let accepted = c.register.on_commit(config);
            if accepted && config.followers.contains(me) {
                // A log of another epoch is of an incarnation that ended
                // (retired while this broker was away, or lost on every
                // replica): its offsets are not the leader's.
                if c.epoch.as_ref().is_some_and(|e| e.id != epoch.id) {
                    c.log.start_over();
                }
                c.log.adopt(config.term, leader_end);
                c.epoch = Some(epoch);
            }
            (accepted, accepted)
        })
    }

    /// `Append` from the leader of its term.
    pub fn append(
        &self,
        channel: &ChannelName,
        append: Append,
    ) -> Result<AppendReply, ReplicaError> {
        let keep = self.namespaces.options(channel)?.history_size as u64;
        self.with_held(channel, |c, _| {
            if let Some(leader) = c.register.config().map(|cfg| cfg.leader.clone()) {
                self.vigil.lock().heard(&leader, Instant::now());
            }
            // Behind the leader's window: start where its log does (only
            // for the term this log follows).
            if append.term == c.log.term() && append.term == c.register.promised() {
                c.log.skip_to(append.log_start);
            }
            let reply = c.log.on_append(
                &c.register,
                append.term,
                append.offset,
                append.entry,
                append.committed,
            );
            // Only the history window is kept (and what is not committed
            // yet, which the log never drops).
            let end = c.log.end();
            c.log.forget_before(end.saturating_sub(keep) + 1);
            (reply, false)
        })
    }

    /// A lease renewal from `leader` for `term`: how long it runs from now.
    pub fn renew(
        &self,
        channel: &ChannelName,
        leader: &BrokerName,
        term: Term,
    ) -> Result<Option<Duration>, ReplicaError> {
        let now = Instant::now();
        self.with_held(channel, |c, _| {
            let until = c.register.grant_lease(now, leader, term);
            let mut vigil = self.vigil.lock();
            vigil.heard(leader, now);
            if let Some(until) = until {
                vigil.granted(leader, until, now);
            }
            (until.map(|u| u.saturating_duration_since(now)), false)
        })
    }

    /// A candidacy of this broker for the next term of `channel`, on top of
    /// the newest configuration its register knows (before the first term,
    /// the one `plan`'s failover order names).
    pub fn candidacy(&self, channel: &ChannelName, plan: Plan) -> Result<Candidacy, ReplicaError> {
        let initial = plan.initial_config().ok_or(ReplicaError::NoBrokers)?;
        self.with(channel, |c, me| {
            let base = c.register.config().cloned().unwrap_or(initial);
            let term = base.term.max(c.register.promised()).max(c.outbid).next();
            (Candidacy::new(me.clone(), base, &c.log, term, plan), false)
        })?
        .map_err(ReplicaError::from)
    }

    /// The candidacy for `config` was won: this broker's log leads its
    /// term, and its register takes the configuration. False if the
    /// register promised a later term meanwhile, or the log was handed
    /// away: then it only learns the configuration (to stand on next
    /// time, with a log) and does not lead.
    pub fn won(&self, channel: &ChannelName, config: &ReplicaConfig) -> Result<bool, ReplicaError> {
        self.with(channel, |c, _| {
            // Its log was handed back to its leader while it stood
            // ([`Self::hand_replica`]): it may not lead from nothing.
            if c.log.is_lost() {
                c.register.learn(config);
                return (false, true);
            }
            if c.register.on_commit(config) {
                c.log.lead(config.term);
                (true, true)
            } else {
                c.register.learn(config);
                (false, true)
            }
        })
    }

    /// A voter refused this broker's candidacy for `channel` with a
    /// promise of `term` and no configuration: the next stands above it.
    /// (Not a promise: it restricts no vote of this broker's.)
    pub fn outbid(&self, channel: &ChannelName, term: Term) -> Result<(), ReplicaError> {
        self.with(channel, |c, _| {
            c.outbid = c.outbid.max(term);
            ((), false)
        })
    }

    /// A configuration newer than the one known, reported by a voter.
    pub fn learn(&self, channel: &ChannelName, config: &ReplicaConfig) -> Result<(), ReplicaError> {
        // One this broker retired, reported by a broker that has not heard
        // of it yet: not to be stood on (it is told again).
        if self.retired_here(channel, config.term) {
            return Ok(());
        }
        self.with(channel, |c, _| {
            c.register.learn(config);
            ((), true)
        })
    }

    /// `channel`'s register: its promise, to whom, and the configuration it
    /// accepted last.
    pub fn register(
        &self,
        channel: &ChannelName,
    ) -> Option<(Term, Option<BrokerName>, Option<ReplicaConfig>)> {
        let channels = self.channels.lock();
        let r = &channels.get(channel)?.register;
        Some((r.promised(), r.promised_to().cloned(), r.config().cloned()))
    }

    /// What this broker holds of `channel` as a replica: its term, log end
    /// and committed offset, and the epoch (for tests and metrics).
    pub fn state(&self, channel: &ChannelName) -> Option<(Term, u64, u64, Option<Epoch>)> {
        let channels = self.channels.lock();
        let c = channels.get(channel)?;
        Some((
            c.log.term(),
            c.log.end(),
            c.log.committed(),
            c.epoch.clone(),
        ))
    }

    /// `leader`'s stream opened, or ended.
    pub fn stream_from(&self, leader: &BrokerName, open: bool) {
        let mut vigil = self.vigil.lock();
        match open {
            true => vigil.opened(leader, Instant::now()),
            false => vigil.ended(leader, Instant::now()),
        }
    }

    /// The leader of `channel`, if this broker follows it with a complete
    /// log and the leader is lost, with no lease granted here still
    /// holding it: this broker may stand for the channel now, counting
    /// that leader out, without waiting for gossip to (docs/replication.md,
    /// fast failover).
    pub fn lost_leader(&self, channel: &ChannelName) -> Option<BrokerName> {
        let leader = {
            let channels = self.channels.lock();
            self.followed_leader(channels.get(channel)?)?.clone()
        };
        self.leader_lost(&leader).then_some(leader)
    }

    /// Whether `leader` is lost to this broker: its stream ended or it fell
    /// silent, and no lease granted to it here still runs (the vigil).
    pub fn leader_lost(&self, leader: &BrokerName) -> bool {
        self.vigil
            .lock()
            .due(Instant::now(), SILENCE)
            .contains(leader)
    }

    /// Whom this broker follows in `c`, if its log is complete for the term.
    fn followed_leader<'c>(&self, c: &'c ReplicaChannel) -> Option<&'c BrokerName> {
        let config = c.register.config()?;
        let follows = c.leading.is_none() && config.followers.contains(&self.me);
        (follows && c.log.is_complete_for(config.term)).then_some(&config.leader)
    }

    /// `channel`'s state was handed over from here while this broker did
    /// not lead it (it served the channel unreplicated): its replica log,
    /// if any, is behind what went, and may not be stood on until a leader
    /// brings it into a later term.
    pub fn supersede(&self, channel: &ChannelName) {
        if let Some(c) = self.channels.lock().get_mut(channel)
            && c.leading.is_none()
        {
            c.log = ReplicaLog::lost();
        }
    }

    /// Until when this broker's register for `channel` holds a lease for
    /// another broker, if it does.
    pub fn lease_until(&self, channel: &ChannelName) -> Option<Instant> {
        let channels = self.channels.lock();
        let lease = channels.get(channel)?.register.lease()?;
        lease.holder.as_ref().map(|_| lease.until)
    }

    /// When registers read back from disk start voting again.
    pub fn votes_from(&self) -> Instant {
        self.started + self.lease
    }
}
