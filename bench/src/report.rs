//! What the run tells: a progress line on stderr once a second, and the
//! summary, printed as one JSON document on stdout for machines
//! (fields in docs/benchmarks.md).

use std::net::Ipv4Addr;

use serde::Serialize;

use super::{
    baseline::LoopbackWrite,
    latency::Percentiles,
    plan::Plan,
    process::{Process, Usage, rss},
    tally::Tally,
    waking::WakingWrite,
};

/// What the phases measured, for the summary.
#[derive(Debug, Default)]
pub struct Readings {
    /// Each server's usage before the tool connected.
    pub before: Vec<Option<Usage>>,
    /// After the subscriber connections were established and settled.
    pub connected: Vec<Option<Usage>>,
    /// After subscribing and settling (as connected for an idle run).
    pub subscribed: Vec<Option<Usage>>,
    /// Subscriber connections established by the end of the connect phase.
    pub established: usize,
    pub setup_seconds: f64,
    pub subscribe_seconds: f64,
    pub traffic: Traffic,
    pub window: Window,
}

/// How long publishing, draining and delivering took: all 0 without
/// publishers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub publish_seconds: f64,
    pub drain_seconds: f64,
    pub delivery_seconds: f64,
}

/// Usage at both ends of the window that CPU figures cover: publish and
/// drain, or an idle run's hold.
#[derive(Debug, Default)]
pub struct Window {
    pub seconds: f64,
    pub servers_start: Vec<Option<Usage>>,
    pub servers_end: Vec<Option<Usage>>,
    pub tool_start: Option<Usage>,
    pub tool_end: Option<Usage>,
}

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
    /// CPU per delivery against one loopback write (null for idle runs).
    pub cost: Option<Cost>,
}

/// What a delivery costs, in CPU time and in loopback writes.
#[derive(Debug, Serialize, Default)]
pub struct Cost {
    /// The yardstick, measured by the tool before the run.
    pub loopback_write: LoopbackWrite,
    /// Every watched server's CPU over the window, per delivery.
    pub server_cpu_us_per_delivery: f64,
    /// That in loopback writes (issue 15's target: at most 1.5).
    pub server_writes_per_delivery: f64,
    /// The tool's own CPU per delivery: the subscribers' side (with the
    /// publishers', which is small next to it under fan-out).
    pub tool_cpu_us_per_delivery: f64,
    pub tool_writes_per_delivery: f64,
    /// The second yardstick: a write that wakes a reader asleep on another
    /// core, as a server's delivery to a waiting client does (absent when
    /// the machine gave the tool one core only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waking_write: Option<WakingWrite>,
    /// The server's CPU per delivery in such writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_waking_writes_per_delivery: Option<f64>,
}

impl Cost {
    fn new(
        (write, waking): (LoopbackWrite, Option<WakingWrite>),
        servers: &[Server],
        tool: &Tool,
        delivered: u64,
    ) -> Self {
        let per = |cpu: f64| cpu / delivered.max(1) as f64 * 1e6;
        let in_writes = |us: f64| {
            if write.cpu_us > 0.0 {
                round(us / write.cpu_us, 3)
            } else {
                0.0
            }
        };
        let server = per(servers.iter().map(|s| s.cpu_seconds).sum());
        let tool = per(tool.cpu_seconds);
        Self {
            loopback_write: write,
            server_cpu_us_per_delivery: round(server, 3),
            server_writes_per_delivery: in_writes(server),
            tool_cpu_us_per_delivery: round(tool, 3),
            tool_writes_per_delivery: in_writes(tool),
            server_waking_writes_per_delivery: waking
                .filter(|w| w.cpu_us > 0.0)
                .map(|w| round(server / w.cpu_us, 3)),
            waking_write: waking,
        }
    }
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

impl Summary {
    /// The summary of a finished run: `tally` holds its final counts,
    /// `sources` the addresses it connected from, and `readings` what its
    /// phases measured of the watched `servers`.
    pub fn new(
        plan: &Plan,
        tally: &Tally,
        sources: &[Ipv4Addr],
        servers: &[Process],
        readings: &Readings,
        write: Option<LoopbackWrite>,
        waking: Option<WakingWrite>,
    ) -> Self {
        let subscribed = Tally::count(&tally.subscribed);
        let servers: Vec<Server> = servers
            .iter()
            .enumerate()
            .map(|(i, p)| Server::new(*p, i, plan.channels > 0, subscribed, readings))
            .collect();
        let tool = Tool::new(&readings.window);
        let delivered = Tally::get(&tally.delivered);
        Self {
            connections: Connections::new(plan, tally, sources, readings),
            cost: write.map(|w| Cost::new((w, waking), &servers, &tool, delivered)),
            servers,
            subscriptions: Subscriptions {
                requested: plan.subscriptions(),
                established: subscribed,
                failed: Tally::count(&tally.subscribe_failed),
                setup_seconds: round(readings.subscribe_seconds, 3),
            },
            publish: Publish::new(plan, tally, &readings.traffic),
            delivery: Delivery::new(tally, &readings.traffic),
            latency_us: tally.latency.percentiles(),
            tool,
            plan: plan.clone(),
        }
    }
}

impl Connections {
    fn new(plan: &Plan, tally: &Tally, sources: &[Ipv4Addr], readings: &Readings) -> Self {
        let (established, setup) = (readings.established, readings.setup_seconds);
        Self {
            requested: plan.connections,
            established,
            failed: Tally::count(&tally.connect_failed),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            setup_seconds: round(setup, 3),
            setup_per_second: round(established as f64 / setup.max(1e-9), 1),
            closed_by_server: Tally::count(&tally.closed_by_server),
            publishers: Tally::count(&tally.publishers_connected),
        }
    }
}

impl Server {
    /// Server `i` of those watched, `process`; memory per subscription
    /// only when the run `subscribes`, over the `subscribed` subscriptions.
    fn new(
        process: Process,
        i: usize,
        subscribes: bool,
        subscribed: usize,
        readings: &Readings,
    ) -> Self {
        let r = readings;
        let (b, c, s) = (r.before[i], r.connected[i], r.subscribed[i]);
        let subs = subscribed.max(1) as f64;
        let (start, end) = (r.window.servers_start[i], r.window.servers_end[i]);
        let (cpu_seconds, cpu_percent) = cpu_percent(start, end, r.window.seconds);
        Self {
            pid: process.pid,
            rss_before_bytes: rss(b),
            rss_connected_bytes: rss(c),
            rss_per_connection_bytes: round(
                (rss(c) as f64 - rss(b) as f64) / r.established.max(1) as f64,
                1,
            ),
            rss_subscribed_bytes: if subscribes { rss(s) } else { 0 },
            rss_per_subscription_bytes: if subscribes {
                round((rss(s) as f64 - rss(c) as f64) / subs, 1)
            } else {
                0.0
            },
            cpu_seconds,
            cpu_percent,
            cpu_system_seconds: system_seconds(start, end),
        }
    }
}

impl Publish {
    fn new(plan: &Plan, tally: &Tally, traffic: &Traffic) -> Self {
        let published = tally.published_total();
        let seconds = traffic.publish_seconds;
        Self {
            seconds,
            published,
            target_per_second: plan.rate,
            achieved_per_second: if seconds > 0.0 {
                round(published as f64 / seconds, 1)
            } else {
                0.0
            },
            lag_us: tally.lag.percentiles(),
        }
    }
}

impl Delivery {
    fn new(tally: &Tally, traffic: &Traffic) -> Self {
        let delivered = Tally::get(&tally.delivered);
        Self {
            expected: tally.expected(),
            delivered,
            lost: Tally::get(&tally.lost),
            order_violations: Tally::get(&tally.order_violations),
            per_second: if traffic.delivery_seconds > 0.0 {
                round(delivered as f64 / traffic.delivery_seconds, 1)
            } else {
                0.0
            },
            drain_seconds: round(traffic.drain_seconds, 3),
            presence_events: Tally::get(&tally.events),
            errors: Tally::get(&tally.errors),
        }
    }
}

impl Tool {
    /// The tool's own figures: CPU over `window`, memory now.
    fn new(window: &Window) -> Self {
        let (start, end) = (window.tool_start, window.tool_end);
        let (cpu_seconds, cpu_percent) = cpu_percent(start, end, window.seconds);
        Self {
            cpu_seconds,
            cpu_percent,
            cpu_system_seconds: system_seconds(start, end),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rss_bytes: Process::me().usage().map_or(0, |u| u.rss_bytes),
        }
    }
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
    /// Server CPU µs per delivery over the last second, and one loopback
    /// write's, when there were deliveries.
    pub server_us_per_delivery: Option<(f64, Option<f64>)>,
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
        )?;
        match self.server_us_per_delivery {
            Some((us, Some(write))) => write!(
                f,
                " | server {us:.1} µs/delivery = {:.2} writes of {write:.2} µs",
                us / write
            ),
            Some((us, None)) => write!(f, " | server {us:.1} µs/delivery"),
            None => Ok(()),
        }
    }
}
