//! Renewing the token before it expires: when to ask the provider, the
//! `refresh` request with what it returned, and retrying while the old
//! token still lasts.

use std::time::Duration;

use tokio::{
    task::{JoinError, JoinHandle},
    time::Instant,
};

use switchboard_core::frame::RequestFrame;

use super::Driver;
use crate::{
    error::ClientError,
    event::ClientEvent,
    frame,
    request::Waiter,
    token::{BoxError, TokenSource, expiry, refresh_delay},
};

/// A token being fetched from the provider.
pub(super) type Fetch = JoinHandle<Result<String, BoxError>>;

impl Driver {
    /// Time to renew: the provider runs in a task of its own, so that a
    /// slow provider never holds up reading and writing the connection.
    pub(super) fn start_refresh(&mut self) -> Option<Fetch> {
        self.refresh_at = None;
        if let TokenSource::Provider(provider) = &self.token_source {
            return Some(tokio::spawn(provider()));
        }
        None
    }

    /// What the provider returned: sent as `refresh`, or a failure that is
    /// retried later.
    pub(super) fn token_fetched(&mut self, fetched: Result<Result<String, BoxError>, JoinError>) {
        match fetched {
            Ok(Ok(token)) if !token.is_empty() => {
                let frame = frame::request(&RequestFrame::Refresh { token: &token });
                let (_, frame) = self.requests.send_now(
                    frame,
                    Waiter::Refresh { token },
                    self.opts.request_timeout,
                );
                self.outbox.push((None, frame));
            }
            Ok(Ok(_)) => {
                self.refresh_failed(ClientError::Token("the provider returned no token".into()))
            }
            Ok(Err(e)) => self.refresh_failed(ClientError::Token(e.to_string())),
            Err(e) => self.refresh_failed(ClientError::Token(e.to_string())),
        }
    }

    pub(super) fn refresh_failed(&mut self, error: ClientError) {
        self.emit(ClientEvent::Error(error));
        // Keep trying while the old token lasts; if it runs out the server
        // closes with 4003 and the reconnect fetches a new token anyway.
        let retry = self.opts.refresh_margin.min(Duration::from_secs(5));
        self.refresh_at = Some(Instant::now() + retry);
    }

    /// When to renew the current token, if it comes from a provider and expires.
    pub(super) fn refresh_time(&self) -> Option<Instant> {
        if !matches!(self.token_source, TokenSource::Provider(_)) {
            return None;
        }
        let exp = expiry(self.token.as_deref()?)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let ttl = Duration::from_secs(exp).saturating_sub(now);
        Some(Instant::now() + refresh_delay(ttl, self.opts.refresh_margin))
    }
}
