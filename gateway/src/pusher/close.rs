//! Why the door ends a connection, with the code pusher-js acts on:
//! 4000-4099 do not reconnect, 4100-4199 reconnect after backing off,
//! 4200-4299 reconnect at once. Each is sent as `pusher:error` with the
//! code, then as the WebSocket close code.

/// The end of a Pusher connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No app has the key in the path.
    UnknownApp,
    /// The `protocol` query parameter is missing.
    NoProtocol,
    /// The `protocol` query parameter names a version the door does not speak.
    UnsupportedProtocol,
    /// A `pusher:signin` with a bad signature.
    Unauthorized,
    /// The app or the gateway is at its connection limit.
    OverCapacity,
    /// The client stayed silent through `activity_timeout` and the ping after it.
    PongTimeout,
    /// The client fell behind its outbound queue.
    SlowConsumer,
    /// The gateway is shutting down: reconnect (to another one).
    Shutdown,
    /// A backend ended the user's connections (`terminate_connections`).
    Terminated,
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Close::UnknownApp => 4001,
            Close::UnsupportedProtocol => 4007,
            Close::NoProtocol => 4008,
            Close::Unauthorized => 4009,
            Close::Terminated => 4009,
            Close::OverCapacity => 4100,
            Close::SlowConsumer => 4100,
            Close::Shutdown => 4200,
            Close::PongTimeout => 4201,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Close::UnknownApp => "App key not in this cluster",
            Close::UnsupportedProtocol => "Unsupported protocol version (5 to 7 are)",
            Close::NoProtocol => "No protocol version supplied",
            Close::Unauthorized => "Connection is unauthorized",
            Close::Terminated => "Connection terminated by the application",
            Close::OverCapacity => "Over capacity",
            Close::SlowConsumer => "Over capacity: the client does not keep up",
            Close::Shutdown => "Server shutting down, reconnect",
            Close::PongTimeout => "Pong reply not received",
        }
    }

    /// A metric label.
    pub fn label(self) -> &'static str {
        match self {
            Close::UnknownApp => "pusher_unknown_app",
            Close::UnsupportedProtocol => "pusher_unsupported_protocol",
            Close::NoProtocol => "pusher_no_protocol",
            Close::Unauthorized => "pusher_unauthorized",
            Close::Terminated => "pusher_terminated",
            Close::OverCapacity => "pusher_over_capacity",
            Close::SlowConsumer => "slow_consumer",
            Close::Shutdown => "shutdown",
            Close::PongTimeout => "pusher_pong_timeout",
        }
    }
}

/// Checks the `protocol` query parameter pusher-js and other clients send.
pub fn check_protocol(protocol: Option<&str>) -> Result<(), Close> {
    let protocol = protocol.ok_or(Close::NoProtocol)?;
    match protocol.parse::<u8>() {
        Ok(5..=7) => Ok(()),
        _ => Err(Close::UnsupportedProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions() {
        assert_eq!(check_protocol(Some("7")), Ok(()));
        assert_eq!(check_protocol(Some("5")), Ok(()));
        assert_eq!(check_protocol(Some("4")), Err(Close::UnsupportedProtocol));
        assert_eq!(check_protocol(Some("x")), Err(Close::UnsupportedProtocol));
        assert_eq!(check_protocol(None), Err(Close::NoProtocol));
    }

    #[test]
    fn codes_tell_pusher_js_whether_to_reconnect() {
        // 40xx: do not; 41xx: after a back-off; 42xx: at once.
        assert_eq!(Close::UnknownApp.code() / 100, 40);
        assert_eq!(Close::Unauthorized.code() / 100, 40);
        assert_eq!(Close::OverCapacity.code() / 100, 41);
        assert_eq!(Close::Shutdown.code() / 100, 42);
        assert_eq!(Close::PongTimeout.code() / 100, 42);
    }
}
