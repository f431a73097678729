//! A limit acting on a socket or a request: counted in a metric every time,
//! logged at most once per interval for each limit. A flood is exactly
//! when refusals come fast, and a warning per refusal would turn the flood
//! into a second one, on the log.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use metrics::counter;
use parking_lot::Mutex;

use crate::telemetry;

/// How often each limit may log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The limits that refuse or end sockets and API requests
/// (docs/security.md, "Client side").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.max_sockets`: the accepted socket is closed.
    Sockets,
    /// `limits.max_sockets_per_ip`.
    SocketsPerIp,
    /// `limits.connection_rate_per_ip` and `connection_burst_per_ip`.
    ConnectionRate,
    /// `limits.handshake_timeout`: a socket that did not send the first
    /// bytes of a request in time is closed.
    Handshake,
    /// `limits.http_idle_timeout`: an HTTP connection without a request in
    /// flight is shut down.
    HttpIdle,
    /// `api.body_timeout`: an API request body that does not arrive in time.
    BodyTimeout,
    /// `api.max_concurrent_requests`.
    ApiConcurrency,
}

impl Limit {
    const ALL: [Limit; 7] = [
        Limit::Sockets,
        Limit::SocketsPerIp,
        Limit::ConnectionRate,
        Limit::Handshake,
        Limit::HttpIdle,
        Limit::BodyTimeout,
        Limit::ApiConcurrency,
    ];

    /// The `limit` label of the metric.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Sockets => "max_sockets",
            Limit::SocketsPerIp => "max_sockets_per_ip",
            Limit::ConnectionRate => "connection_rate_per_ip",
            Limit::Handshake => "handshake_timeout",
            Limit::HttpIdle => "http_idle_timeout",
            Limit::BodyTimeout => "body_timeout",
            Limit::ApiConcurrency => "max_concurrent_requests",
        }
    }

    fn index(self) -> usize {
        Limit::ALL
            .iter()
            .position(|l| *l == self)
            .expect("every limit is listed")
    }
}

/// Whether to log now: the first event logs, then at most one per
/// `interval`, carrying how many went unlogged in between. Sans-IO.
#[derive(Debug, Default)]
pub struct LogGate {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogGate {
    /// `Some(unlogged since the last log)` when this event should be logged.
    pub fn note(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

fn gates() -> &'static [Mutex<LogGate>; Limit::ALL.len()] {
    static GATES: OnceLock<[Mutex<LogGate>; Limit::ALL.len()]> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

/// Counts one act of `limit` and logs it unless it logged lately.
pub fn record(limit: Limit) {
    telemetry::refused(limit.label());
    let logged = gates()[limit.index()]
        .lock()
        .note(Instant::now(), LOG_INTERVAL);
    if let Some(unlogged) = logged {
        tracing::warn!(
            limit = limit.label(),
            since_last_log = unlogged,
            "limit acting (logged at most every {}s; the metric counts each)",
            LOG_INTERVAL.as_secs()
        );
    }
}

/// Registers every limit's series at zero, so that an alert sees it from
/// the first scrape.
pub fn register() {
    for limit in Limit::ALL {
        counter!(telemetry::LIMITED, "limit" => limit.label()).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_then_once_per_interval_with_the_count() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut gate = LogGate::default();
        assert_eq!(gate.note(t0, second), Some(0));
        assert_eq!(gate.note(t0, second), None);
        assert_eq!(gate.note(t0 + second / 2, second), None);
        assert_eq!(gate.note(t0 + second, second), Some(2));
        assert_eq!(gate.note(t0 + second, second), None);
        assert_eq!(gate.note(t0 + second * 5, second), Some(1));
    }

    #[test]
    fn every_limit_has_its_own_label() {
        let mut labels: Vec<_> = Limit::ALL.iter().map(|l| l.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Limit::ALL.len());
        assert!(Limit::ALL.iter().enumerate().all(|(i, l)| l.index() == i));
    }
}
