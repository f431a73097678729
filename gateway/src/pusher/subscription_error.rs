//! Why a Pusher subscription was refused, as `pusher:subscription_error`
//! tells it (`type`, `error`, `status`; docs/pusher.md).

use switchboard_core::BrokerError;

/// A refused subscription: sent as `pusher:subscription_error`.
pub struct Refusal {
    pub kind: &'static str,
    pub error: String,
    pub status: u16,
}

impl Refusal {
    pub fn new(kind: &'static str, error: impl Into<String>, status: u16) -> Self {
        Self {
            kind,
            error: error.into(),
            status,
        }
    }
}

impl From<BrokerError> for Refusal {
    fn from(e: BrokerError) -> Self {
        tracing::warn!(error = %e, "pusher subscription failed at the owner");
        Refusal::new("ServerError", "channel unavailable, retry", 503)
    }
}
