//! Forgetting an abandoned promise (docs/replication.md "Retiring an idle
//! channel"): a candidacy that won promises and got no further (it lost
//! to another term, or its candidate died or moved on) leaves at each
//! voter a register holding a promise and no configuration. No leader
//! retires such a channel, since none leads it, so under churn these
//! registers would pile up. A broker forgets one on its own once it has
//! held the same promise for [`ABANDONED_AFTER`], raising its floor to
//! it as retirement does: it never promises that term again, and the
//! candidate's accept round, should it still come, is refused (the
//! candidate stands again, above). A voter that accepted nothing carries
//! nothing of the channel, so forgetting it loses nothing chosen; the
//! model checks it (`abandon` in `cluster/tests/replication_model.rs`).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use switchboard_cluster::replication::Term;
use switchboard_core::ChannelName;

use super::{ReplicaChannel, ReplicaError, Replicas};

/// How long a register holds the same bare promise before it is forgotten:
/// well past any election's deadline (3 s), so that only candidacies that
/// ended are cut short.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(10);

/// Bare promises seen by the last sweeps, and since when, by channel.
pub(super) type Marks = HashMap<ChannelName, (Term, Instant)>;

impl Replicas {
    /// Forgets the registers that have held the same bare promise for
    /// [`ABANDONED_AFTER`] at `now` (called once per sweep). Returns how
    /// many went.
    pub fn forget_abandoned(&self, now: Instant) -> Result<usize, ReplicaError> {
        let Some(store) = self.store.as_ref() else {
            return Ok(0);
        };
        let mut channels = self.channels.lock();
        let floors = store.lock();
        let mut marks = self.abandoned.lock();
        let before = std::mem::take(&mut *marks);
        let mut due = Vec::new();
        for (name, c) in channels.iter() {
            let Some(promised) = c.bare_promise(floors.floor(name), now) else {
                continue;
            };
            let since = match before.get(name) {
                Some(&(t, since)) if t == promised => since,
                _ => now,
            };
            if now.duration_since(since) >= ABANDONED_AFTER {
                due.push((name.clone(), promised));
            } else {
                marks.insert(name.clone(), (promised, since));
            }
        }
        drop(floors);
        for (name, promised) in &due {
            // On disk before the register goes: the floor keeps the promise.
            store.lock().forget(name, *promised)?;
            channels.remove(name);
            tracing::debug!(channel = %name, promised = %promised, "abandoned promise forgotten");
        }
        Ok(due.len())
    }
}

impl ReplicaChannel {
    /// The promise this register holds and nothing else of the channel:
    /// no configuration, no running lease, a log that follows no term and
    /// proposed nothing, and no leadership or candidacy here.
    fn bare_promise(&self, floor: Term, now: Instant) -> Option<Term> {
        let r = &self.register;
        let bare = r.config().is_none()
            && r.promised() > floor
            && r.lease().is_none_or(|l| l.until <= now)
            && self.log.holds_nothing()
            && self.epoch.is_none()
            && self.leading.is_none()
            && self.standing == 0;
        bare.then(|| r.promised())
    }
}
