//! [`Options`]: the client's timeouts, intervals and bounds, set through
//! the builder and read by the connection.

use std::time::Duration;

use crate::{backoff::BackoffConfig, tls::TlsOptions};

/// Timeouts, intervals and bounds; see the builder's methods.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub stable_after: Duration,
    pub refresh_margin: Duration,
    pub max_queued: usize,
    pub backoff: BackoffConfig,
    pub jitter: fn() -> f64,
    pub tls: TlsOptions,
    /// Offer `switchboard.batch`: several messages per frame.
    pub batch: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(10),
            stable_after: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(30),
            max_queued: 1024,
            backoff: BackoffConfig::default(),
            jitter: rand::random::<f64>,
            tls: TlsOptions::default(),
            batch: true,
        }
    }
}
