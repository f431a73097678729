//! What the end of a connection means for reconnecting: the server's
//! `disconnect` advice, or the close code when the socket ended without one.

/// Close codes for ends the client decided on (3000-3999 is for libraries);
/// the same numbers as the JavaScript client's `ClientCloseCode`.
pub mod close_code {
    /// `disconnect()` was called.
    pub const DISCONNECT_CALLED: u16 = 3000;
    /// No reply to a ping: the connection is half-open.
    pub const NO_PONG: u16 = 3001;
    /// The socket ended without a close frame, or a write did not complete.
    pub const TRANSPORT_CLOSED: u16 = 3002;
    /// `reconnect()` was called.
    pub const RECONNECT_CALLED: u16 = 3003;
    /// The token provider failed.
    pub const TOKEN_UNAVAILABLE: u16 = 3004;
    /// The connection did not open and authenticate in time.
    pub const CONNECT_TIMEOUT: u16 = 3005;
    /// A subscribe request went unanswered; the connection is not trusted.
    pub const SUBSCRIBE_TIMEOUT: u16 = 3006;
    /// The socket ended without a close frame (RFC 6455's 1006).
    pub const ABNORMAL: u16 = 1006;
}

use switchboard_core::frame::{close::FINAL, push::Disconnect};

/// The server's `disconnect` frame.
pub type DisconnectFrame = Disconnect<String>;

/// What to do after a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub code: u16,
    pub reason: String,
    /// Connect again at all.
    pub reconnect: bool,
    /// Skip the backoff delay once.
    pub immediate: bool,
}

impl Advice {
    /// An end the client itself decided on, to be followed by a reconnect.
    pub fn retry(code: u16, reason: &str) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            reconnect: true,
            immediate: false,
        }
    }
}

/// Combines the `disconnect` frame (if one came) with the close code.
pub fn advise(disconnect: Option<&DisconnectFrame>, close_code: u16, close_reason: &str) -> Advice {
    let (code, reason, reconnect) = match disconnect {
        Some(d) => (d.code, d.reason.clone(), d.reconnect),
        None => (
            close_code,
            close_reason.to_owned(),
            !FINAL.contains(&close_code),
        ),
    };
    // A drain (1001) means "this server is going away, connect again": waiting
    // only lengthens the outage. An expired token (4003) is cured by a new
    // token, not by waiting.
    let immediate = reconnect && matches!(code, 1001 | 4003);
    Advice {
        code,
        reason,
        reconnect,
        immediate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(code: u16, reconnect: bool) -> DisconnectFrame {
        DisconnectFrame {
            code,
            reason: "r".into(),
            reconnect,
        }
    }

    #[test]
    fn the_disconnect_frame_decides() {
        let a = advise(Some(&frame(1001, true)), 1001, "");
        assert!(a.reconnect && a.immediate);
        assert!(!advise(Some(&frame(4001, false)), 4001, "").reconnect);
        let slow = advise(Some(&frame(4005, true)), 4005, "");
        assert!(slow.reconnect && !slow.immediate);
        assert!(advise(Some(&frame(4003, true)), 4003, "").immediate);
    }

    #[test]
    fn without_one_the_close_code_decides() {
        let lost = advise(None, close_code::ABNORMAL, "");
        assert!(lost.reconnect && !lost.immediate);
        for code in FINAL {
            assert!(!advise(None, code, "").reconnect, "{code}");
        }
    }
}
