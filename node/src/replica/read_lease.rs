//! Reads under a majority lease (docs/replication.md, "Normal operation",
//! step 4; the model's invariant 5): a leader answers history, recovery,
//! subscribe and presence reads of a channel it leads only while a
//! majority of the channel's voters hold a lease for it. While they do,
//! no later term can have been won (its candidate would need one of those
//! voters, and they vote for nobody else meanwhile), so nothing was
//! acknowledged that the copy here lacks. A leader frozen past its lease
//! (SIGSTOP) or cut off from its voters would otherwise answer from a copy
//! a newer term has moved past.

use std::sync::atomic::{AtomicUsize, Ordering};

use switchboard_core::ChannelName;
use tokio::sync::Notify;

use super::{LEASE, Replicas};

/// Readers waiting for a lease, and the signal that one was granted.
#[derive(Default)]
pub(super) struct LeaseWaiters {
    waiting: AtomicUsize,
    granted: Notify,
}

impl LeaseWaiters {
    /// A voter granted a lease: wakes the readers waiting for one, if any
    /// (grants come thousands a second; nobody waits in the steady state).
    pub(super) fn granted(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.granted.notify_waiters();
        }
    }
}

/// Why a read of a channel led here was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadRefused {
    /// No majority of the voters renewed the lease within [`LEASE`]: they
    /// are gone, cut off, or this broker was frozen. The caller asks again
    /// (a refill or a takeover is under way, or this broker's term is over).
    #[error("no majority of the channel's voters holds a lease for this leader")]
    NoMajorityLease,
    /// It stopped leading the channel while the read waited.
    #[error("no longer leads the channel")]
    SteppedDown,
}

/// Counts a reader as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Replicas {
    /// Lets a read of `channel` through: at once if this broker does not
    /// lead it (served unreplicated, or not here: not this gate's
    /// business) or leads it under a majority's leases; otherwise waits up
    /// to one [`LEASE`] for the renewals in flight to bring a majority back.
    pub async fn read_lease(&self, channel: &ChannelName) -> Result<(), ReadRefused> {
        if self.lease_held(channel) != Some(false) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + LEASE;
        let _waiting = Waiting::new(&self.lease_waiters.waiting);
        loop {
            let granted = self.lease_waiters.granted.notified();
            tokio::pin!(granted);
            // Registered before the check, so a grant in between is seen.
            granted.as_mut().enable();
            match self.lease_held(channel) {
                None => return Err(ReadRefused::SteppedDown),
                Some(true) => return Ok(()),
                Some(false) => {}
            }
            if tokio::time::timeout_at(deadline, granted).await.is_err() {
                if self.lease_held(channel).is_none() {
                    return Err(ReadRefused::SteppedDown);
                }
                tracing::debug!(channel = %channel, "read refused: no majority of its voters renewed the lease");
                metrics::counter!("switchboard_replication_reads_refused_total").increment(1);
                return Err(ReadRefused::NoMajorityLease);
            }
        }
    }

    /// Reads waiting in [`Self::read_lease`] now.
    pub fn reads_waiting(&self) -> usize {
        self.lease_waiters.waiting.load(Ordering::Acquire)
    }
}
