//! The log filter: the operator's `--log` directives, under a cap that no
//! directive lifts, so that logs never carry tokens or payloads.
//!
//! tungstenite logs every frame whole at `trace` (`received frame …`,
//! `Sending frame …`, `Received message …`): `auth` tokens and message
//! payloads. A directive such as `trace`, `tungstenite=trace` or a span
//! filter would enable them; the cap is a second, separate filter, so it
//! holds whatever the directives say.
//!
//! The cap also never reaches above the directives' own most verbose
//! level: the subscriber's level hint is the most verbose of its filters,
//! and the `log` crate's records (tungstenite logs several per frame) are
//! turned away by one comparison against that hint before they reach any
//! filter. A cap open to `trace` made each of them pass through the
//! directives instead: about 50 records and 10,000 instructions per
//! delivered message (docs/benchmarks.md, issue 15).

use tracing_subscriber::{
    Layer, Registry,
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

/// The most verbose level `directives` may let through.
pub(crate) fn most_verbose(directives: &EnvFilter) -> LevelFilter {
    <EnvFilter as Layer<Registry>>::max_level_hint(directives).unwrap_or(LevelFilter::TRACE)
}

/// Everything up to `max`, except the capped libraries above their cap.
pub(crate) fn cap(max: LevelFilter) -> Targets {
    CAPPED.iter().fold(
        Targets::new().with_default(max),
        |targets, &(target, level)| targets.with_target(target, level.min(max)),
    )
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn frame_logs_stay_below_trace_and_the_rest_passes() {
        let cap = super::cap(LevelFilter::TRACE);
        for target in ["tungstenite::protocol", "tungstenite", "tokio_tungstenite"] {
            assert!(!cap.would_enable(target, &Level::TRACE), "{target}");
            assert!(cap.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(cap.would_enable("switchboard_gateway::connection", &Level::TRACE));
        assert!(cap.would_enable("h2", &Level::TRACE));
    }

    #[test]
    fn the_cap_reaches_no_further_than_the_directives() {
        let directives = super::directives("info,switchboard_gateway=debug");
        let max = super::most_verbose(&directives);
        assert_eq!(max, LevelFilter::DEBUG);
        let cap = super::cap(max);
        assert_eq!(
            <_ as tracing_subscriber::Layer<tracing_subscriber::Registry>>::max_level_hint(&cap),
            Some(LevelFilter::DEBUG)
        );
        assert!(!cap.would_enable("h2", &Level::TRACE));
        assert!(cap.would_enable("tungstenite", &Level::DEBUG));
        let info = super::cap(super::most_verbose(&super::directives("info")));
        assert!(!info.would_enable("tungstenite", &Level::DEBUG));
        assert_eq!(
            <_ as tracing_subscriber::Layer<tracing_subscriber::Registry>>::max_level_hint(&info),
            Some(LevelFilter::INFO)
        );
    }
}
