//! What the run tells: a progress line on stderr once a second, and the
//! summary, printed as one JSON document on stdout for machines
//! (fields in docs/benchmarks.md).

use serde::Serialize;

use super::{latency::Percentiles, plan::Plan, process::Usage};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub plan: Plan,
    pub connections: Connections,
    /// One entry per watched server process.
    pub servers: Vec<Server>,
    pub subscriptions: Subscriptions,
    pub publish: Publish,
    pub delivery: Delivery,
    /// End-to-end latency of deliveries, microseconds.
    pub latency_us: Percentiles,
    pub tool: Tool,
}

#[derive(Debug, Serialize)]
pub struct Connections {
    pub requested: usize,
    pub established: usize,
    pub failed: usize,
    /// Source addresses used, round robin.
    pub sources: Vec<String>,
    pub setup_seconds: f64,
    pub setup_per_second: f64,
    /// Connections the server closed during the run.
    pub closed_by_server: usize,
    pub publishers: usize,
}

#[derive(Debug, Serialize, Default)]
pub struct Server {
    pub pid: u32,
    /// Before the tool connected.
    pub rss_before_bytes: u64,
    /// After the subscriber connections were established and settled.
    pub rss_connected_bytes: u64,
    /// (connected − before) / established connections.
    pub rss_per_connection_bytes: f64,
    /// After subscribing and settling (0 for an idle run).
    pub rss_subscribed_bytes: u64,
    /// (subscribed − connected) / established subscriptions.
    pub rss_per_subscription_bytes: f64,
    /// CPU time used while publishing and draining.
    pub cpu_seconds: f64,
    /// That CPU time over the same wall time: 100 is one core.
    pub cpu_percent: f64,
    /// The part of `cpu_seconds` spent in the kernel.
    pub cpu_system_seconds: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct Subscriptions {
    pub requested: usize,
    pub established: usize,
    pub failed: usize,
    pub setup_seconds: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct Publish {
    pub seconds: f64,
    pub published: u64,
    pub target_per_second: f64,
    pub achieved_per_second: f64,
    /// How late publications left against the schedule, microseconds:
    /// a tool that keeps its schedule shows small values here.
    pub lag_us: Percentiles,
}

#[derive(Debug, Serialize, Default)]
pub struct Delivery {
    /// Each publication times the subscriptions of its channel.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub order_violations: u64,
    /// Delivered over the time from the first publication to the last
    /// delivery (or the end of the drain).
    pub per_second: f64,
    /// How long after publishing stopped the last deliveries came.
    pub drain_seconds: f64,
    /// `join`/`leave` frames received (the namespace has join/leave on).
    pub presence_events: u64,
    /// `error` frames received, refused subscribes aside.
    pub errors: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct Tool {
    /// The tool's own CPU over the publish and drain window.
    pub cpu_seconds: f64,
    pub cpu_percent: f64,
    /// The part of `cpu_seconds` spent in the kernel.
    pub cpu_system_seconds: f64,
    /// Cores the tool may run on (its affinity).
    pub cores: usize,
    /// The tool's resident memory at the end.
    pub rss_bytes: u64,
}

/// Kernel CPU seconds between two readings.
pub fn system_seconds(before: Option<Usage>, after: Option<Usage>) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) => round(a.system_seconds - b.system_seconds, 2),
        _ => 0.0,
    }
}

/// CPU percent of one core used between two readings over `wall` seconds.
pub fn cpu_percent(before: Option<Usage>, after: Option<Usage>, wall: f64) -> (f64, f64) {
    match (before, after) {
        (Some(b), Some(a)) if wall > 0.0 => {
            let cpu = a.cpu_seconds - b.cpu_seconds;
            (round(cpu, 2), round(cpu / wall * 100.0, 1))
        }
        _ => (0.0, 0.0),
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// One progress line.
pub struct Progress<'a> {
    pub phase: &'a str,
    pub elapsed: f64,
    pub connected: usize,
    pub requested: usize,
    pub subscribed: usize,
    pub published: u64,
    pub delivered: u64,
    pub delivered_per_second: f64,
    pub expected: u64,
    pub p99_us: u64,
    pub tool_cpu_percent: f64,
    pub server_cpu_percent: f64,
    pub server_rss_bytes: u64,
}

impl std::fmt::Display for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:>6.1}s] {:<9} conns {}/{} subs {} published {} delivered {}/{} ({:.0}/s) p99 {:.2} ms | cpu tool {:.0}% server {:.0}% | server rss {:.1} MiB",
            self.elapsed,
            self.phase,
            self.connected,
            self.requested,
            self.subscribed,
            self.published,
            self.delivered,
            self.expected,
            self.delivered_per_second,
            self.p99_us as f64 / 1000.0,
            self.tool_cpu_percent,
            self.server_cpu_percent,
            self.server_rss_bytes as f64 / (1024.0 * 1024.0),
        )
    }
}
