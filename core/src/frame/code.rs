//! The numbers clients switch on (docs/protocol.md §7): error codes of
//! `error` frames, and close codes of `disconnect` and close frames.

/// The code of an `error` frame; the connection stays open unless noted
/// in docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    Internal = 100,
    Unauthorized = 101,
    UnknownNamespace = 102,
    PermissionDenied = 103,
    UnknownType = 104,
    AlreadySubscribed = 105,
    TooManyChannels = 106,
    BadRequest = 107,
    NotAvailable = 108,
    TokenExpired = 109,
    RateLimited = 110,
    NotSubscribed = 111,
    AlreadyAuthenticated = 112,
    InvalidChannel = 113,
    PresenceFull = 114,
    /// A broker's memory budget is spent: no new channel (docs/protocol.md).
    OverCapacity = 115,
}

impl ErrorCode {
    /// The number on the wire.
    pub const fn get(self) -> u16 {
        self as u16
    }
}

impl PartialEq<ErrorCode> for u16 {
    fn eq(&self, code: &ErrorCode) -> bool {
        *self == code.get()
    }
}

/// Close codes the server ends connections with, in its `disconnect` frame
/// and the close frame after it. A backend may also choose any code in
/// 3000-4999 (server API `disconnect_user`).
pub mod close {
    /// The server is stopping or draining; connect again.
    pub const SHUTDOWN: u16 = 1001;
    /// The client sent a binary frame.
    pub const BINARY_FRAME: u16 = 1003;
    /// A text frame was not valid UTF-8.
    pub const INVALID_UTF8: u16 = 1007;
    /// A batched frame held more requests than the protocol allows.
    pub const TOO_MANY_REQUESTS: u16 = 1008;
    /// A message exceeded `limits.max_message_bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Token refused or missing.
    pub const UNAUTHORIZED: u16 = 4001;
    /// No `auth` within `limits.auth_timeout`.
    pub const AUTH_TIMEOUT: u16 = 4002;
    /// The token's `exp` passed without `refresh`.
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// The client's outbound queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4005;
    /// Rate limit exceeded, where the server closes for it.
    pub const RATE_LIMITED: u16 = 4008;
    /// Nothing received within `limits.idle_timeout`.
    pub const IDLE_TIMEOUT: u16 = 4009;
    /// The socket accepted no bytes within `limits.write_timeout`.
    pub const WRITE_TIMEOUT: u16 = 4010;
    /// A backend's `disconnect_user` without a code of its own.
    pub const REQUESTED: u16 = 4000;

    /// Codes after which connecting again unchanged cannot help.
    pub const FINAL: [u16; 6] = [
        BINARY_FRAME,
        INVALID_UTF8,
        TOO_MANY_REQUESTS,
        MESSAGE_TOO_BIG,
        UNAUTHORIZED,
        AUTH_TIMEOUT,
    ];
}
