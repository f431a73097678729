//! The load itself: one task per connection ([`subscriber`](crate::subscriber)
//! and [`publisher`](crate::publisher)), and the [`Run`] they all share:
//! the plan, the dialer, the counters and the [`Phase`] they wait on.
//!
//! Every task keeps reading its socket in every phase, so the server's
//! pings are answered and nothing it sends piles up in the kernel.

use std::time::Duration;

use tokio::{
    sync::{Semaphore, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    dialer::{DialError, Dialer, Ws},
    plan::{Layout, Plan},
    tally::Tally,
};

/// Where the run is; tasks wait on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Connect,
    Subscribe,
    /// Publishers start; the schedule counts from `Run::origin` plus this.
    Publish {
        at_micros: u64,
    },
}

/// Longest a connection may take to open, handshake included.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection task shares.
pub struct Run {
    pub plan: Plan,
    pub dialer: Dialer,
    pub tally: Tally,
    pub phase: watch::Sender<Phase>,
    pub stop: CancellationToken,
    /// Timestamps in payloads are microseconds since this instant: one
    /// monotonic clock for publishers and subscribers in this process.
    pub origin: Instant,
    pub connecting: Semaphore,
}

impl Run {
    /// A run of `plan`, in the connect phase, its clock starting now.
    pub fn new(plan: Plan, layout: &Layout) -> Self {
        let (phase, _) = watch::channel(Phase::Connect);
        Self {
            dialer: Dialer::new(
                layout.server,
                plan.url.clone(),
                layout.sources.clone(),
                plan.secret.as_deref(),
                plan.batch,
            ),
            tally: Tally::new(plan.channels),
            phase,
            stop: CancellationToken::new(),
            origin: Instant::now(),
            connecting: Semaphore::new(plan.connect_concurrency.max(1)),
            plan,
        }
    }

    pub fn now_micros(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Opens connection `n`, or counts (and for the first few, tells) why
    /// it could not.
    pub async fn dial(&self, n: usize) -> Option<Ws> {
        let dialed = {
            let _permit = self.connecting.acquire().await.ok()?;
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                dialed = tokio::time::timeout(DIAL_TIMEOUT, self.dialer.dial(n)) => {
                    dialed.unwrap_or(Err(DialError::Timeout(DIAL_TIMEOUT)))
                }
            }
        };
        match dialed {
            Ok(ws) => Some(ws),
            Err(e) => {
                Tally::bump(&self.tally.connect_failed);
                // The first few tell why; the count tells how many.
                if Tally::count(&self.tally.connect_failed) <= 3 {
                    eprintln!("connection {n} failed: {}", e.chain());
                }
                None
            }
        }
    }

    /// Counts a connection that ended before the run did.
    pub fn closed(&self) {
        if !self.stop.is_cancelled() {
            Tally::bump(&self.tally.closed_by_server);
        }
    }
}
