//! What can go wrong for a caller: the server's request errors (codes
//! 100-115, docs/protocol.md §7) and the client's own, numbered below 100
//! as in the JavaScript client.

use std::time::Duration;

use switchboard_core::frame::ErrorCode;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ClientError {
    /// No reply within the request timeout (waiting for a connection included).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection ended before the reply came; the request may or may
    /// not have been carried out.
    #[error("connection lost before the reply")]
    ConnectionLost,
    /// The client is disconnected: `disconnect()`, or the server said not to come back.
    #[error("client is disconnected")]
    Closed,
    /// Too many requests wait for a connection.
    #[error("too many requests wait for a connection")]
    QueueFull,
    /// The token provider failed.
    #[error("token unavailable: {0}")]
    Token(String),
    /// A subscription to the channel exists already on this client.
    #[error("already subscribed to {0}")]
    AlreadySubscribed(String),
    /// The server refused the request.
    #[error("{message} (code {code})")]
    Server { code: u16, message: String },
    /// The server's reply did not have the documented shape.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

impl ClientError {
    /// One number for every error: the server's code, or the client's
    /// (1 timeout, 2 connection lost, 3 closed, 4 queue full, 5 token,
    /// 7 already subscribed, 8 protocol).
    pub fn code(&self) -> u16 {
        match self {
            ClientError::Timeout(_) => 1,
            ClientError::ConnectionLost => 2,
            ClientError::Closed => 3,
            ClientError::QueueFull => 4,
            ClientError::Token(_) => 5,
            ClientError::AlreadySubscribed(_) => 7,
            ClientError::Protocol(_) => 8,
            ClientError::Server { code, .. } => *code,
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout(_)
                | ClientError::ConnectionLost
                | ClientError::QueueFull
                | ClientError::Token(_)
        ) || matches!(self, ClientError::Server { code, .. }
            if *code == ErrorCode::Internal
                || *code == ErrorCode::RateLimited
                || *code == ErrorCode::OverCapacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> ClientError {
        ClientError::Server {
            code,
            message: String::new(),
        }
    }

    #[test]
    fn what_may_succeed_later_is_temporary() {
        // 100 internal, 110 rate limited, 115 over capacity (docs/protocol.md §7).
        for code in [100, 110, 115] {
            assert!(server(code).is_temporary(), "{code}");
        }
        for code in [101, 103, 107, 111, 113, 114] {
            assert!(!server(code).is_temporary(), "{code}");
        }
    }
}
