//! Waiting for a phase to finish, with a progress line on stderr once a
//! second.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    baseline::LoopbackWrite,
    load::Run,
    process::{Process, Usage, rss},
    report::{Progress, cpu_percent},
    tally::Tally,
};

/// How often phases check whether they are done.
const POLL: Duration = Duration::from_millis(50);

/// Waits for phases and prints the progress line once a second.
pub struct Monitor {
    run: Arc<Run>,
    servers: Vec<Process>,
    started: Instant,
    last_print: Instant,
    last_delivered: u64,
    last_tool: Option<Usage>,
    last_servers: Vec<Option<Usage>>,
    /// CPU µs of one loopback write, when measured.
    write_us: Option<f64>,
}

impl Monitor {
    pub fn new(run: Arc<Run>, servers: Vec<Process>, write: Option<LoopbackWrite>) -> Self {
        let last_servers = servers.iter().map(|p| p.usage()).collect();
        Self {
            run,
            servers,
            started: Instant::now(),
            last_print: Instant::now(),
            last_delivered: 0,
            last_tool: Process::me().usage(),
            last_servers,
            write_us: write.map(|w| w.cpu_us).filter(|&us| us > 0.0),
        }
    }

    /// The server processes watched.
    pub fn servers(&self) -> &[Process] {
        &self.servers
    }

    pub fn servers_usage(&self) -> Vec<Option<Usage>> {
        self.servers.iter().map(|p| p.usage()).collect()
    }

    /// Waits until `done` holds or `until` passes (whichever is given).
    pub async fn wait(
        &mut self,
        phase: &str,
        until: Option<Instant>,
        done: impl Fn(&Tally) -> bool,
    ) {
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

    /// Waits for `pause`, printing progress as `phase`.
    pub async fn settle(&mut self, phase: &str, pause: Duration) {
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
        let delivered_per_second = (delivered - self.last_delivered) as f64 / wall;
        let per_delivery = (delivered_per_second > 0.0)
            .then(|| server_cpu / 100.0 / delivered_per_second * 1e6)
            .map(|us| (us, self.write_us));
        let progress = Progress {
            phase,
            elapsed: self.started.elapsed().as_secs_f64(),
            connected: Tally::count(&t.connected),
            requested: self.run.plan.connections,
            subscribed: Tally::count(&t.subscribed),
            published: t.published_total(),
            delivered,
            delivered_per_second,
            expected: t.expected(),
            p99_us: t.latency.percentiles().p99,
            tool_cpu_percent: cpu_percent(self.last_tool, tool, wall).1,
            server_cpu_percent: server_cpu,
            server_rss_bytes: servers.iter().map(|u| rss(*u)).sum(),
            server_us_per_delivery: per_delivery,
        };
        eprintln!("{progress}");
        self.last_delivered = delivered;
        self.last_tool = tool;
        self.last_servers = servers;
    }
}
