//! Client-facing errors, and the one place that maps them, and broker
//! errors, to wire codes (docs/protocol.md lists them).

use serde_json::value::RawValue;
use switchboard_core::{
    BrokerError,
    frame::{ErrorCode, FrameError, close, push, reply},
};
use thiserror::Error;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// An error answered with an `error` frame; the connection stays open.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    #[error("internal error")]
    Internal,
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("unknown channel namespace")]
    UnknownNamespace,
    #[error("permission denied")]
    PermissionDenied,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("already subscribed")]
    AlreadySubscribed,
    #[error("too many channels: at most {0} per connection")]
    TooManyChannels(usize),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0} is not enabled for this channel")]
    NotAvailable(&'static str),
    #[error("token expired")]
    TokenExpired,
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("not subscribed")]
    NotSubscribed,
    #[error("already authenticated")]
    AlreadyAuthenticated,
    #[error("channel is full: at most {0} clients in its presence")]
    PresenceFull(usize),
    #[error("invalid channel name: {0}")]
    InvalidChannel(&'static str),
    #[error("over capacity: no new channels on this server now, retry later")]
    OverCapacity,
}

impl RequestError {
    /// The stable number clients switch on.
    pub fn code(&self) -> u16 {
        let code = match self {
            RequestError::Internal => ErrorCode::Internal,
            RequestError::Unauthorized(_) => ErrorCode::Unauthorized,
            RequestError::UnknownNamespace => ErrorCode::UnknownNamespace,
            RequestError::PermissionDenied => ErrorCode::PermissionDenied,
            RequestError::UnknownType(_) => ErrorCode::UnknownType,
            RequestError::AlreadySubscribed => ErrorCode::AlreadySubscribed,
            RequestError::TooManyChannels(_) => ErrorCode::TooManyChannels,
            RequestError::BadRequest(_) => ErrorCode::BadRequest,
            RequestError::NotAvailable(_) => ErrorCode::NotAvailable,
            RequestError::TokenExpired => ErrorCode::TokenExpired,
            RequestError::RateLimited => ErrorCode::RateLimited,
            RequestError::NotSubscribed => ErrorCode::NotSubscribed,
            RequestError::AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
            RequestError::InvalidChannel(_) => ErrorCode::InvalidChannel,
            RequestError::PresenceFull(_) => ErrorCode::PresenceFull,
            RequestError::OverCapacity => ErrorCode::OverCapacity,
        };
        code.get()
    }

    /// The `error` frame answering request `id`.
    pub fn frame(&self, id: Option<&RawValue>) -> Utf8Bytes {
        Utf8Bytes::from(reply::error(id, &self.to_string(), self.code()))
    }

    /// Label for the errors metric.
    pub fn label(&self) -> &'static str {
        match self {
            RequestError::Internal => "internal",
            RequestError::Unauthorized(_) => "unauthorized",
            RequestError::UnknownNamespace => "unknown_namespace",
            RequestError::PermissionDenied => "permission_denied",
            RequestError::UnknownType(_) => "unknown_type",
            RequestError::AlreadySubscribed => "already_subscribed",
            RequestError::TooManyChannels(_) => "too_many_channels",
            RequestError::BadRequest(_) => "bad_request",
            RequestError::NotAvailable(_) => "not_available",
            RequestError::TokenExpired => "token_expired",
            RequestError::RateLimited => "rate_limited",
            RequestError::NotSubscribed => "not_subscribed",
            RequestError::AlreadyAuthenticated => "already_authenticated",
            RequestError::InvalidChannel(_) => "invalid_channel",
            RequestError::PresenceFull(_) => "presence_full",
            RequestError::OverCapacity => "over_capacity",
        }
    }
}

impl From<crate::auth::AuthError> for RequestError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Expired => RequestError::TokenExpired,
            other => RequestError::Unauthorized(other.to_string()),
        }
    }
}

impl From<FrameError> for RequestError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::BadRequest(why) => RequestError::BadRequest(why),
            FrameError::UnknownType(kind) => RequestError::UnknownType(kind),
            FrameError::InvalidChannel(why) => RequestError::InvalidChannel(why),
        }
    }
}

impl From<BrokerError> for RequestError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::InvalidChannel(why) => RequestError::InvalidChannel(why),
            BrokerError::UnknownNamespace => RequestError::UnknownNamespace,
            BrokerError::NotAvailable(what) => RequestError::NotAvailable(what),
            BrokerError::PresenceFull(max) => RequestError::PresenceFull(max),
            BrokerError::InvalidData => RequestError::BadRequest("data is not valid JSON".into()),
            BrokerError::InvalidIdempotencyKey => RequestError::BadRequest(e.to_string()),
            BrokerError::OverCapacity => RequestError::OverCapacity,
            BrokerError::ShuttingDown
            | BrokerError::NotAttached
            | BrokerError::NotOwner { .. }
            | BrokerError::Unavailable(_) => {
                tracing::warn!(error = %e, "broker unavailable");
                RequestError::Internal
            }
        }
    }
}

/// Why the server ends a connection: a `disconnect` frame, then a close
/// frame with the same code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The server is shutting down or draining; connect again (elsewhere).
    Shutdown,
    /// Binary frames are not part of the protocol.
    BinaryFrame,
    /// A text frame was not valid UTF-8.
    InvalidUtf8,
    /// A message exceeded `limits.max_message_bytes`.
    MessageTooBig,
    /// A batched frame held more requests than `outbox::MAX_BATCH_REQUESTS`.
    TooManyRequests,
    /// Authentication failed: bad, expired, or missing token.
    Unauthorized,
    /// No `auth` message arrived within `limits.auth_timeout`.
    AuthTimeout,
    /// The token expired on a live connection; reconnect with a fresh one.
    TokenExpired,
    /// The client did not read fast enough; its queue overflowed.
    SlowConsumer,
    /// The client exceeded its rate limit and config closes such connections.
    RateLimited,
    /// Nothing was received within `limits.idle_timeout`.
    IdleTimeout,
    /// The socket accepted no bytes within `limits.write_timeout`.
    WriteTimeout,
    /// An application backend asked, through the server API.
    Requested {
        code: u16,
        reason: String,
        reconnect: bool,
    },
}

/// Longest close reason a WebSocket close frame can carry, in bytes.
pub const MAX_CLOSE_REASON: usize = 123;

impl Disconnect {
    /// A disconnect asked for by a backend; the reason is cut to what a
    /// close frame can carry.
    pub fn requested(code: u16, reason: &str, reconnect: bool) -> Self {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Disconnect::Requested {
            code,
            reason: reason[..end].to_owned(),
            reconnect,
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            Disconnect::Shutdown => close::SHUTDOWN,
            Disconnect::BinaryFrame => close::BINARY_FRAME,
            Disconnect::InvalidUtf8 => close::INVALID_UTF8,
            Disconnect::MessageTooBig => close::MESSAGE_TOO_BIG,
            Disconnect::TooManyRequests => close::TOO_MANY_REQUESTS,
            Disconnect::Unauthorized => close::UNAUTHORIZED,
            Disconnect::AuthTimeout => close::AUTH_TIMEOUT,
            Disconnect::TokenExpired => close::TOKEN_EXPIRED,
            Disconnect::SlowConsumer => close::SLOW_CONSUMER,
            Disconnect::RateLimited => close::RATE_LIMITED,
            Disconnect::IdleTimeout => close::IDLE_TIMEOUT,
            Disconnect::WriteTimeout => close::WRITE_TIMEOUT,
            Disconnect::Requested { code, .. } => *code,
        }
    }

    /// The `disconnect` frame sent before the close frame.
    pub fn frame(&self) -> Utf8Bytes {
        Utf8Bytes::from(push::disconnect(
            self.code(),
            self.reason(),
            self.reconnect(),
        ))
    }

    pub fn reason(&self) -> &str {
        match self {
            Disconnect::Shutdown => "server shutting down",
            Disconnect::BinaryFrame => "binary frames are not supported",
            Disconnect::InvalidUtf8 => "invalid UTF-8",
            Disconnect::MessageTooBig => "message too big",
            Disconnect::TooManyRequests => "too many requests in one frame",
            Disconnect::Unauthorized => "unauthorized",
            Disconnect::AuthTimeout => "auth timeout",
            Disconnect::TokenExpired => "token expired",
            Disconnect::SlowConsumer => "slow consumer",
            Disconnect::RateLimited => "rate limit exceeded",
            Disconnect::IdleTimeout => "idle timeout",
            Disconnect::WriteTimeout => "write timeout",
            Disconnect::Requested { reason, .. } => reason,
        }
    }

    /// Whether a client should connect again.
    pub fn reconnect(&self) -> bool {
        match self {
            Disconnect::Requested { reconnect, .. } => *reconnect,
            _ => matches!(
                self,
                Disconnect::Shutdown
                    | Disconnect::TokenExpired
                    | Disconnect::SlowConsumer
                    | Disconnect::RateLimited
                    | Disconnect::IdleTimeout
                    | Disconnect::WriteTimeout
            ),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Disconnect::Shutdown => "shutdown",
            Disconnect::BinaryFrame => "binary_frame",
            Disconnect::InvalidUtf8 => "invalid_utf8",
            Disconnect::MessageTooBig => "message_too_big",
            Disconnect::TooManyRequests => "too_many_requests",
            Disconnect::Unauthorized => "unauthorized",
            Disconnect::AuthTimeout => "auth_timeout",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::RateLimited => "rate_limited",
            Disconnect::IdleTimeout => "idle_timeout",
            Disconnect::WriteTimeout => "write_timeout",
            Disconnect::Requested { .. } => "requested",
        }
    }
}
