//! The client's state and the events it emits on every change.

use crate::{error::ClientError, frame::Publication};

/// Where the client stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Opening a connection, or waiting to retry.
    Connecting,
    /// Open, authenticated, serving requests.
    Connected {
        /// Set when connected with a token.
        client_id: Option<String>,
        /// `""` when anonymous.
        user_id: String,
    },
    /// Not trying: after `disconnect()` or a close the server said not to
    /// retry. `code` and `reason` say why.
    Disconnected { code: u16, reason: String },
}

/// Something that happened to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A connection ended or an attempt failed (`code`, `reason`), and the
    /// next attempt follows after `delay`.
    Connecting {
        code: u16,
        reason: String,
        /// Failed attempts since the last stable connection.
        attempt: u32,
        delay: std::time::Duration,
    },
    Connected {
        client_id: Option<String>,
        user_id: String,
    },
    /// Final: the client will not reconnect by itself.
    Disconnected { code: u16, reason: String },
    /// A problem that does not end the client: a token provider failure,
    /// the error of a publish without acknowledgement.
    Error(ClientError),
    /// The server accepted a renewed token (its `exp`, if readable).
    Refreshed { expires_at: Option<u64> },
    /// A publication on a channel without a subscription here: the user's
    /// personal channel, which the server subscribes by itself.
    Message(Publication),
}
