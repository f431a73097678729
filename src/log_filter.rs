//! The log filter: the operator's `--log` directives, under a cap that no
//! directive lifts, so that logs never carry tokens or payloads.
//!
//! tungstenite logs every frame whole at `trace` (`received frame …`,
//! `Sending frame …`, `Received message …`): `auth` tokens and message
//! payloads. A directive such as `trace`, `tungstenite=trace` or a span
//! filter would enable them; the cap is a second, separate filter, so it
//! holds whatever the directives say.

use tracing_subscriber::{
    Layer,
    filter::{EnvFilter, LevelFilter, Targets},
};

/// The libraries that log frames, and the most they may log.
const CAPPED: &[(&str, LevelFilter)] = &[
    ("tungstenite", LevelFilter::DEBUG),
    ("tokio_tungstenite", LevelFilter::DEBUG),
];

/// `--log`, or `info` if it does not parse.
pub(crate) fn directives(filter: &str) -> EnvFilter {
    EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The `log` crate's own static level, for libraries that log through it
/// (tungstenite): the most verbose level the directives enable. Without
/// it the cap's `trace` default sets it to `trace`, and tokio-tungstenite's
/// `trace!` on every read attempt (each connection's every wake-up, a
/// delivery's included) went through the subscriber only to be dropped:
/// 5% of a server's CPU under fan-out. Directives that filter on spans or
/// fields give no hint; then everything stays on.
pub(crate) fn log_max_level(filter: &EnvFilter) -> log::LevelFilter {
    let hint = Layer::<tracing_subscriber::Registry>::max_level_hint(filter);
    match hint.unwrap_or(LevelFilter::TRACE) {
        LevelFilter::OFF => log::LevelFilter::Off,
        LevelFilter::ERROR => log::LevelFilter::Error,
        LevelFilter::WARN => log::LevelFilter::Warn,
        LevelFilter::INFO => log::LevelFilter::Info,
        LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
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

    #[test]
    fn the_log_crate_level_follows_the_directives() {
        use super::{directives, log_max_level};
        assert_eq!(log_max_level(&directives("info")), log::LevelFilter::Info);
        assert_eq!(
            log_max_level(&directives("warn,switchboard_gateway=debug")),
            log::LevelFilter::Debug
        );
        assert_eq!(log_max_level(&directives("trace")), log::LevelFilter::Trace);
    }
}
