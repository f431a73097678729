//! `switchboard bench`: a load generator that speaks the client protocol.
//!
//! A run goes through phases, each waited for with a progress line per
//! second on stderr:
//!
//! 1. **connect**: the subscriber connections, from 127.0.0.x source
//!    addresses; the server's resident memory before and after gives the
//!    memory per connection;
//! 2. **subscribe**: each channel's subscribers, on distinct connections;
//! 3. **publish**: publisher connections write publications on a fixed
//!    schedule for the planned duration, open loop;
//! 4. **drain**: until every publication reached every subscriber, or
//!    the drain time is up.
//!
//! An idle run (no channels) holds the connections for the duration
//! instead of 2-4. The summary is returned for `main` to print.
//!
//! - [`plan`]: the command line, and who subscribes and publishes where.
//! - [`dialer`]: connections from source addresses, with tokens.
//! - [`load`]: the subscriber and publisher connection tasks.
//! - [`payload`]: publish frames with sequence and timestamp; server frames read back.
//! - [`tally`]: the shared counters.
//! - [`latency`]: sharded HDR histograms.
//! - [`process`]: the server's (and the tool's) memory and CPU from `/proc`.
//! - [`report`]: the progress line and the JSON summary.

pub mod dialer;
pub mod latency;
pub mod load;
pub mod payload;
pub mod plan;
pub mod process;
pub mod report;
pub mod tally;

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

pub use self::plan::Plan;
use self::{
    dialer::Dialer,
    load::{Phase, Run},
    process::{Process, Usage},
    report::{Progress, Summary, cpu_percent, round},
    tally::Tally,
};

/// How often phases check whether they are done.
const POLL: Duration = Duration::from_millis(50);

/// Longest the connect or subscribe phase may take: a server that stops
/// answering ends the run with what it has rather than hanging it.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// Runs the plan to its end and returns the summary.
pub async fn run(plan: Plan) -> anyhow::Result<Summary> {
    let layout = plan.layout()?;
    let servers: Vec<Process> = if plan.server_pids.is_empty() {
        Process::listening_on(layout.server).into_iter().collect()
    } else {
        plan.server_pids
            .iter()
            .map(|&pid| Process { pid })
            .collect()
    };
    if servers.is_empty() {
        eprintln!(
            "note: no process found listening on {}; server memory and CPU are not reported (pass --server-pid)",
            layout.server
        );
    }
    let (phase, _) = watch::channel(Phase::Connect);
    let run = Arc::new(Run {
        dialer: Dialer::new(
            layout.server,
            plan.url.clone(),
            layout.sources.clone(),
            plan.secret.as_deref(),
        ),
        tally: Tally::new(plan.channels),
        phase,
        stop: CancellationToken::new(),
        origin: Instant::now(),
        connecting: Semaphore::new(plan.connect_concurrency.max(1)),
        plan,
    });
    let mut monitor = Monitor::new(run.clone(), servers);
    let before = monitor.servers_usage();

    // 1. Connect.
    let mut tasks = JoinSet::new();
    let connect_start = Instant::now();
    for conn in 0..run.plan.connections {
        tasks.spawn(load::subscriber(run.clone(), conn));
    }
    let n = run.plan.connections;
    monitor
        .wait("connect", Some(Instant::now() + PHASE_LIMIT), |t| {
            Tally::count(&t.connected) + Tally::count(&t.connect_failed) >= n
        })
        .await;
    let setup_seconds = connect_start.elapsed().as_secs_f64();
    let established = Tally::count(&run.tally.connected);
    monitor.settle("settle", run.plan.settle).await;
    let connected = monitor.servers_usage();

    // 2. Subscribe.
    let subscribe_start = Instant::now();
    let requested_subs = run.plan.subscriptions();
    let mut subscribed = connected.clone();
    if run.plan.channels > 0 {
        run.phase.send_replace(Phase::Subscribe);
        let want = run.plan.subscriptions();
        monitor
            .wait("subscribe", Some(Instant::now() + PHASE_LIMIT), |t| {
                Tally::count(&t.subscribed) + Tally::count(&t.subscribe_failed) >= want
            })
            .await;
        monitor.settle("settle", run.plan.settle).await;
        subscribed = monitor.servers_usage();
    }
    let subscribe_seconds = subscribe_start.elapsed().as_secs_f64();

    // 3. Publish, 4. drain.
    let mut publish_seconds = 0.0;
    let mut drain_seconds = 0.0;
    let mut delivery_seconds = 0.0;
    let window_start = Instant::now();
    let (servers_start, tool_start) = (monitor.servers_usage(), Process::me().usage());
    if layout.publishers > 0 {
        for p in 0..layout.publishers {
            tasks.spawn(load::publisher(run.clone(), p, layout.publishers));
        }
        let publishers = layout.publishers;
        monitor
            .wait("publishers", Some(Instant::now() + PHASE_LIMIT), |t| {
                Tally::count(&t.publishers_connected) + Tally::count(&t.connect_failed)
                    >= publishers
            })
            .await;
        let publish_start = Instant::now();
        // A short lead so every publisher sees the phase before its first
        // deadline comes due.
        let at = run.now_micros() + 20_000;
        run.phase.send_replace(Phase::Publish { at_micros: at });
        let publish_end = publish_start + run.plan.duration + Duration::from_millis(20);
        monitor.wait("publish", Some(publish_end), |_| false).await;
        publish_seconds = run.plan.duration.as_secs_f64();
        let drain_start = Instant::now();
        monitor
            .wait("drain", Some(drain_start + run.plan.drain), |t| {
                Tally::get(&t.delivered) >= t.expected()
            })
            .await;
        drain_seconds = drain_start.elapsed().as_secs_f64();
        delivery_seconds = publish_start.elapsed().as_secs_f64() - 0.02;
    } else if run.plan.channels == 0 {
        let hold_end = Instant::now() + run.plan.duration;
        monitor.wait("hold", Some(hold_end), |_| false).await;
    }
    let window = window_start.elapsed().as_secs_f64();
    let (servers_end, tool_end) = (monitor.servers_usage(), Process::me().usage());

    // The end: every task stops and settles its losses.
    run.stop.cancel();
    while tasks.join_next().await.is_some() {}

    let t = &run.tally;
    let delivered = Tally::get(&t.delivered);
    let published = t.published_total();
    let servers = monitor
        .servers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (b, c, s) = (before[i], connected[i], subscribed[i]);
            let subs = Tally::count(&t.subscribed).max(1) as f64;
            let (cpu_seconds, cpu_percent) = cpu_percent(servers_start[i], servers_end[i], window);
            report::Server {
                pid: p.pid,
                rss_before_bytes: rss(b),
                rss_connected_bytes: rss(c),
                rss_per_connection_bytes: round(
                    (rss(c) as f64 - rss(b) as f64) / established.max(1) as f64,
                    1,
                ),
                rss_subscribed_bytes: if run.plan.channels > 0 { rss(s) } else { 0 },
                rss_per_subscription_bytes: if run.plan.channels > 0 {
                    round((rss(s) as f64 - rss(c) as f64) / subs, 1)
                } else {
                    0.0
                },
                cpu_seconds,
                cpu_percent,
                cpu_system_seconds: report::system_seconds(servers_start[i], servers_end[i]),
            }
        })
        .collect();
    let (tool_cpu_seconds, tool_cpu_percent) = cpu_percent(tool_start, tool_end, window);
    let summary = Summary {
        connections: report::Connections {
            requested: run.plan.connections,
            established,
            failed: Tally::count(&t.connect_failed),
            sources: layout.sources.iter().map(|s| s.to_string()).collect(),
            setup_seconds: round(setup_seconds, 3),
            setup_per_second: round(established as f64 / setup_seconds.max(1e-9), 1),
            closed_by_server: Tally::count(&t.closed_by_server),
            publishers: Tally::count(&t.publishers_connected),
        },
        servers,
        subscriptions: report::Subscriptions {
            requested: requested_subs,
            established: Tally::count(&t.subscribed),
            failed: Tally::count(&t.subscribe_failed),
            setup_seconds: round(subscribe_seconds, 3),
        },
        publish: report::Publish {
            seconds: publish_seconds,
            published,
            target_per_second: run.plan.rate,
            achieved_per_second: if publish_seconds > 0.0 {
                round(published as f64 / publish_seconds, 1)
            } else {
                0.0
            },
            lag_us: t.lag.percentiles(),
        },
        delivery: report::Delivery {
            expected: t.expected(),
            delivered,
            lost: Tally::get(&t.lost),
            order_violations: Tally::get(&t.order_violations),
            per_second: if delivery_seconds > 0.0 {
                round(delivered as f64 / delivery_seconds, 1)
            } else {
                0.0
            },
            drain_seconds: round(drain_seconds, 3),
            presence_events: Tally::get(&t.events),
            errors: Tally::get(&t.errors),
        },
        latency_us: t.latency.percentiles(),
        tool: report::Tool {
            cpu_seconds: tool_cpu_seconds,
            cpu_percent: tool_cpu_percent,
            cpu_system_seconds: report::system_seconds(tool_start, tool_end),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rss_bytes: Process::me().usage().map_or(0, |u| u.rss_bytes),
        },
        plan: run.plan.clone(),
    };
    Ok(summary)
}

fn rss(u: Option<Usage>) -> u64 {
    u.map_or(0, |u| u.rss_bytes)
}

/// Waits for phases and prints the progress line once a second.
struct Monitor {
    run: Arc<Run>,
    servers: Vec<Process>,
    started: Instant,
    last_print: Instant,
    last_delivered: u64,
    last_tool: Option<Usage>,
    last_servers: Vec<Option<Usage>>,
}

impl Monitor {
    fn new(run: Arc<Run>, servers: Vec<Process>) -> Self {
        let last_servers = servers.iter().map(|p| p.usage()).collect();
        Self {
            run,
            servers,
            started: Instant::now(),
            last_print: Instant::now(),
            last_delivered: 0,
            last_tool: Process::me().usage(),
            last_servers,
        }
    }

    fn servers_usage(&self) -> Vec<Option<Usage>> {
        self.servers.iter().map(|p| p.usage()).collect()
    }

    /// Waits until `done` holds or `until` passes (whichever is given).
    async fn wait(&mut self, phase: &str, until: Option<Instant>, done: impl Fn(&Tally) -> bool) {
        loop {
            if done(&self.run.tally) || until.is_some_and(|u| Instant::now() >= u) {
                return;
            }
            let next = Instant::now() + POLL;
            tokio::time::sleep_until(until.map_or(next, |u| u.min(next))).await;
            if self.last_print.elapsed() >= Duration::from_secs(1) {
                self.print(phase);
            }
        }
    }

    async fn settle(&mut self, phase: &str, pause: Duration) {
        self.wait(phase, Some(Instant::now() + pause), |_| false)
            .await;
    }

    fn print(&mut self, phase: &str) {
        let t = &self.run.tally;
        let wall = self.last_print.elapsed().as_secs_f64();
        self.last_print = Instant::now();
        let delivered = Tally::get(&t.delivered);
        let tool = Process::me().usage();
        let servers = self.servers_usage();
        let server_cpu: f64 = servers
            .iter()
            .zip(&self.last_servers)
            .map(|(now, then)| cpu_percent(*then, *now, wall).1)
            .sum();
        let progress = Progress {
            phase,
            elapsed: self.started.elapsed().as_secs_f64(),
            connected: Tally::count(&t.connected),
            requested: self.run.plan.connections,
            subscribed: Tally::count(&t.subscribed),
            published: t.published_total(),
            delivered,
            delivered_per_second: (delivered - self.last_delivered) as f64 / wall,
            expected: t.expected(),
            p99_us: t.latency.percentiles().p99,
            tool_cpu_percent: cpu_percent(self.last_tool, tool, wall).1,
            server_cpu_percent: server_cpu,
            server_rss_bytes: servers.iter().map(|u| rss(*u)).sum(),
        };
        eprintln!("{progress}");
        self.last_delivered = delivered;
        self.last_tool = tool;
        self.last_servers = servers;
    }
}
