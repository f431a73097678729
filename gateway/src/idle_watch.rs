//! Whether an HTTP connection is idle: no request in flight, and none
//! ended lately. HTTP/2 has no idle timeout of its own, and its keep-alive
//! pings are answered by any client library, so without this an idle h2c
//! connection holds its socket for as long as the peer likes. The server
//! shuts such a connection down gracefully (HTTP/2: GOAWAY) after
//! `limits.http_idle_timeout`.
//!
//! [`verdict`] is the rule, sans-IO; [`IdleWatch`] is the state one
//! connection's requests update, two atomics per request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Idle for the whole timeout: shut the connection down.
    Idle,
    /// Not (yet) idle: look again then.
    CheckAt(Instant),
}

/// The rule: idle once nothing was in flight for `timeout` since
/// `last_active`. With a request in flight, look again a full timeout later.
pub fn verdict(in_flight: usize, last_active: Instant, now: Instant, timeout: Duration) -> Verdict {
    if in_flight > 0 {
        return Verdict::CheckAt(now + timeout);
    }
    let due = last_active + timeout;
    if now >= due {
        Verdict::Idle
    } else {
        Verdict::CheckAt(due)
    }
}

/// One connection's requests in flight and when the last one ended.
#[derive(Debug)]
pub struct IdleWatch {
    origin: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `origin` to the last request's end.
    last_active_ms: AtomicU64,
}

impl IdleWatch {
    pub fn new(now: Instant) -> Self {
        Self {
            origin: now,
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn verdict(&self, now: Instant, timeout: Duration) -> Verdict {
        let last = self.origin + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        verdict(self.in_flight.load(Ordering::Relaxed), last, now, timeout)
    }
}

/// A request in flight on a watched connection.
#[derive(Debug)]
pub struct InFlight(Arc<IdleWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_active_ms.fetch_max(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_after_a_full_timeout_without_requests() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(verdict(0, t0, t0, s), Verdict::CheckAt(t0 + s));
        assert_eq!(verdict(0, t0, t0 + s, s), Verdict::Idle);
        assert_eq!(verdict(1, t0, t0 + s * 5, s), Verdict::CheckAt(t0 + s * 6));
    }

    #[test]
    fn a_request_keeps_the_connection_busy_until_it_ends() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let watch = Arc::new(IdleWatch::new(t0));
        let guard = watch.begin();
        assert!(matches!(watch.verdict(t0 + s * 3, s), Verdict::CheckAt(_)));
        drop(guard);
        let ended = Instant::now();
        assert!(matches!(watch.verdict(ended, s), Verdict::CheckAt(_)));
        assert_eq!(watch.verdict(ended + s * 2, s), Verdict::Idle);
    }
}
