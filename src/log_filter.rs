//! The log filter: the operator's `--log` directives, under a cap that no
//! directive lifts, so that logs never carry tokens or payloads.
//!
//! tungstenite logs every frame whole at `trace` (`received frame …`,
//! `Sending frame …`, `Received message …`): `auth` tokens and message
//! payloads. A directive such as `trace`, `tungstenite=trace` or a span
//! filter would enable them; the cap is a second, separate filter, so it
//! holds whatever the directives say.

use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};

/// The libraries that log frames, and the most they may log.
const CAPPED: &[(&str, LevelFilter)] = &[
    ("tungstenite", LevelFilter::DEBUG),
    ("tokio_tungstenite", LevelFilter::DEBUG),
];

/// `--log`, or `info` if it does not parse.
pub(crate) fn directives(filter: &str) -> EnvFilter {
    EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Everything at any level, except the capped libraries above their cap.
pub(crate) fn cap() -> Targets {
    CAPPED.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, &(target, level)| targets.with_target(target, level),
    )
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn frame_logs_stay_below_trace_and_the_rest_passes() {
        let cap = super::cap();
        for target in ["tungstenite::protocol", "tungstenite", "tokio_tungstenite"] {
            assert!(!cap.would_enable(target, &Level::TRACE), "{target}");
            assert!(cap.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(cap.would_enable("switchboard_gateway::connection", &Level::TRACE));
        assert!(cap.would_enable("h2", &Level::TRACE));
    }
}
