//! The channels held at this broker, each behind its own lock, and the one
//! way to reach a channel's state: look it up (or create it), lock it, and
//! start over if the sweeper removed it in between.

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{ArcMutexGuard, Mutex, RawMutex};
use tokio::time::Instant;

use super::channel_state::{ChannelState, Lifecycle};
use switchboard_core::{ChannelName, host::Host};

/// A channel's state, locked.
pub(super) type Locked = ArcMutexGuard<RawMutex, ChannelState>;

type Map = DashMap<ChannelName, Arc<Mutex<ChannelState>>, foldhash::fast::FixedState>;

pub(super) struct Registry {
    channels: Map,
}

impl Registry {
    pub(super) fn new(host: &Host) -> Self {
        // Seeded: iteration order (sweeps, hand-overs) is repeatable in a
        // simulation and unpredictable to clients in production.
        Self {
            channels: DashMap::with_hasher(host.hasher("channels")),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.channels.len()
    }

    /// Locks `channel`'s state, creating it with `make` if there is none;
    /// says whether it was created.
    pub(super) fn lock_or_insert(
        &self,
        channel: &ChannelName,
        make: impl FnOnce() -> ChannelState,
    ) -> (Locked, bool) {
        let mut make = Some(make);
        loop {
            match self.channels.entry(channel.clone()) {
                dashmap::Entry::Occupied(e) => {
                    let state = e.get().clone();
                    // Not under the map's shard lock: the sweeper takes the
                    // shard lock first and then the channel's.
                    drop(e);
                    let locked = state.lock_arc();
                    if !locked.is_removed() {
                        return (locked, false);
                    }
                }
                dashmap::Entry::Vacant(e) => {
                    let make = make
                        .take()
                        .expect("only the vacant arm creates, then returns");
                    let state = Arc::new(Mutex::new(make()));
                    let locked = state.lock_arc();
                    e.insert(state);
                    return (locked, true);
                }
            }
        }
    }

    /// Whether `channel` has a state here.
    pub(super) fn contains(&self, channel: &ChannelName) -> bool {
        self.channels.contains_key(channel)
    }

    /// Runs `f` if `channel` has no state, holding the map's lock for it so
    /// that none is made meanwhile.
    pub(super) fn unless_present<T>(
        &self,
        channel: &ChannelName,
        f: impl FnOnce() -> T,
    ) -> Option<T> {
        match self.channels.entry(channel.clone()) {
            dashmap::Entry::Vacant(_held) => Some(f()),
            dashmap::Entry::Occupied(_) => None,
        }
    }

    /// Locks `channel`'s state if there is one.
    pub(super) fn lock_existing(&self, channel: &ChannelName) -> Option<Locked> {
        let state = self.channels.get(channel)?.clone();
        let locked = state.lock_arc();
        (!locked.is_removed()).then_some(locked)
    }

    /// Drops `channel` if `drop_it` says so, marking its state removed for
    /// whoever holds it already.
    pub(super) fn remove_if(
        &self,
        channel: &ChannelName,
        drop_it: impl FnOnce(&mut ChannelState) -> bool,
    ) {
        self.channels.remove_if(channel, |_, state| {
            let mut s = state.lock();
            let remove = drop_it(&mut s);
            if remove {
                s.lifecycle = Lifecycle::Removed;
            }
            remove
        });
    }

    /// Drops every channel that is idle at `now` and that `keep` does not
    /// keep, given its offset (asked of idle channels only, under their
    /// locks).
    pub(super) fn sweep(&self, now: Instant, keep: impl Fn(&ChannelName, u64) -> bool) {
        self.channels.retain(|channel, state| {
            let mut s = state.lock();
            if s.is_idle(now) && !keep(channel, s.offset) {
                s.lifecycle = Lifecycle::Removed;
                false
            } else {
                true
            }
        });
    }

    /// Names of the channels whose state passes `keep` (its lock held
    /// briefly for each).
    pub(super) fn names(
        &self,
        keep: impl Fn(&ChannelName, &ChannelState) -> bool,
    ) -> Vec<ChannelName> {
        self.channels
            .iter()
            .filter(|e| keep(e.key(), &e.value().lock()))
            .map(|e| e.key().clone())
            .collect()
    }

    /// Runs `f` on every channel's state, each locked in turn.
    pub(super) fn for_each(&self, mut f: impl FnMut(&ChannelName, &mut ChannelState)) {
        for entry in self.channels.iter() {
            f(entry.key(), &mut entry.value().lock());
        }
    }
}
