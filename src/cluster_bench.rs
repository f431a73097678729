//! `switchboard bench --cluster`: the bench starts the servers itself and
//! runs the same plan twice, against `switchboard dev` and then against
//! one gateway and one broker (plain TCP between them; with
//! `--replication-factor 2` or 3, that many brokers, each channel stored
//! on every one of them, to measure replication's price), each a child
//! process of this binary pinned to `--server-cpus` while the tool runs
//! on `--client-cpus` (taskset). It prints both summaries and the ratio
//! of the cluster's server CPU per delivery to dev's, the price of the
//! hop between gateway and broker. With `--sweep`, each server also runs
//! the plan at each of the given rates, and the knee is reported: the
//! highest rate whose p99 stays under 10 ms with nothing lost.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Serialize;
use switchboard_bench::{Plan, Summary};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
    time::Instant,
};

/// A rate is under the knee while its p99 stays below this.
const KNEE_P99_US: u64 = 10_000;

/// How long a started server has to answer `/readyz`.
const READY_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// Start the servers and run the plan against `switchboard dev`, then
    /// against one gateway and one broker; print both summaries and the
    /// ratio of their server CPU per delivery. `--url` and `--server-pid`
    /// are ignored.
    #[arg(long)]
    pub(crate) cluster: bool,
    /// Cores the server processes run on (a taskset list: 0, 0-1, 2,3).
    #[arg(long, default_value = "0")]
    pub(crate) server_cpus: String,
    /// Cores this tool runs on.
    #[arg(long, default_value = "1")]
    pub(crate) client_cpus: String,
    /// The config the servers run with [default: the embedded dev config].
    #[arg(long)]
    pub(crate) server_config: Option<PathBuf>,
    /// Publication rates to run each server at after the `--rate` run
    /// (comma-separated, ascending), to find the knee.
    #[arg(long, value_delimiter = ',')]
    pub(crate) sweep: Vec<f64>,
    /// Brokers of the cluster run, each channel stored on all of them
    /// (`broker.replication_factor`, 1 to 3): 2 measures what replication
    /// costs against 1 (docs/benchmarks.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub(crate) replication_factor: u8,
}

#[derive(Serialize)]
struct Comparison {
    dev: Summary,
    cluster: Summary,
    /// Server CPU per delivered message, µs (the cluster's: gateway and
    /// broker together).
    dev_cpu_per_delivery_us: f64,
    cluster_cpu_per_delivery_us: f64,
    cluster_to_dev: f64,
    /// With `--sweep`: each rate's figures, and the knee of each server.
    #[serde(skip_serializing_if = "Option::is_none")]
    sweep: Option<Sweep>,
}

#[derive(Serialize)]
struct Sweep {
    dev: Vec<Step>,
    cluster: Vec<Step>,
    /// The highest rate with p99 under 10 ms and nothing lost, if any.
    dev_knee: Option<f64>,
    cluster_knee: Option<f64>,
}

#[derive(Serialize)]
struct Step {
    rate: f64,
    deliveries_per_second: f64,
    p50_us: u64,
    p99_us: u64,
    lost: u64,
    cpu_per_delivery_us: f64,
    /// The watched servers' CPU over the publish and drain window, summed
    /// (100 = one core): how full the server core was at this rate.
    cpu_percent: f64,
}

impl Step {
    fn of(summary: &Summary) -> Self {
        Self {
            rate: summary.plan.rate,
            deliveries_per_second: summary.delivery.per_second,
            p50_us: summary.latency_us.p50,
            p99_us: summary.latency_us.p99,
            lost: summary.delivery.lost,
            cpu_per_delivery_us: cpu_per_delivery_us(summary),
            cpu_percent: summary.servers.iter().map(|s| s.cpu_percent).sum(),
        }
    }
}

fn knee(steps: &[Step]) -> Option<f64> {
    steps
        .iter()
        .filter(|s| s.p99_us < KNEE_P99_US && s.lost == 0)
        .map(|s| s.rate)
        .reduce(f64::max)
}

/// Runs the comparison and returns its JSON document.
pub(crate) async fn run(plan: Plan, args: &ClusterArgs) -> anyhow::Result<String> {
    pin(std::process::id(), &args.client_cpus).await?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let config: Vec<String> = match &args.server_config {
        Some(path) => vec!["--config".into(), path.display().to_string()],
        None => Vec::new(),
    };

    let port = free_port()?;
    let dev = Server::start(
        &exe,
        &args.server_cpus,
        &["dev", "--listen", &port],
        &config,
    )?;
    let dev_runs = measure(&plan, &args.sweep, &port, &[&dev]).await;
    drop(dev);
    let (dev_summary, dev_steps) = dev_runs?;

    let factor = args.replication_factor;
    let (gateway, brokers, port) = start_cluster(&exe, &args.server_cpus, &config, factor).await?;
    let servers: Vec<&Server> = std::iter::once(&gateway).chain(&brokers.servers).collect();
    let cluster_runs = measure(&plan, &args.sweep, &port, &servers).await;
    drop((gateway, brokers));
    let (cluster_summary, cluster_steps) = cluster_runs?;

    let dev_us = cpu_per_delivery_us(&dev_summary);
    let cluster_us = cpu_per_delivery_us(&cluster_summary);
    let cluster_to_dev = cluster_us / dev_us;
    eprintln!(
        "server CPU per delivery: dev {dev_us:.2} µs, gateway + broker {cluster_us:.2} µs, ratio {cluster_to_dev:.3}"
    );
    let sweep = (!args.sweep.is_empty()).then(|| Sweep {
        dev_knee: knee(&dev_steps),
        cluster_knee: knee(&cluster_steps),
        dev: dev_steps,
        cluster: cluster_steps,
    });
    if let Some(sweep) = &sweep {
        eprintln!(
            "knee (p99 < 10 ms, nothing lost): dev {:?}/s, gateway + broker {:?}/s publications",
            sweep.dev_knee, sweep.cluster_knee
        );
    }
    Ok(serde_json::to_string_pretty(&Comparison {
        dev: dev_summary,
        cluster: cluster_summary,
        dev_cpu_per_delivery_us: dev_us,
        cluster_cpu_per_delivery_us: cluster_us,
        cluster_to_dev,
        sweep,
    })?)
}

/// The cluster run's brokers, and the directory their data and logs are in
/// (removed when dropped).
struct Brokers {
    servers: Vec<Server>,
    dir: PathBuf,
}

impl Drop for Brokers {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `factor` brokers (each channel stored on all of them; one is
/// alone, R = 1) and one gateway routed to them, on `cpus`; returns them
/// with the gateway's client port once the brokers see each other.
async fn start_cluster(
    exe: &std::path::Path,
    cpus: &str,
    config: &[String],
    factor: u8,
) -> anyhow::Result<(Server, Brokers, String)> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut brokers = Brokers {
        servers: Vec::new(),
        dir,
    };
    let (factor, mut routes, mut seed) = (factor.to_string(), Vec::new(), None::<String>);
    let names: Vec<String> = (1..=factor.parse::<u8>()?)
        .map(|i| format!("b{i}"))
        .collect();
    for name in &names {
        let (grpc, http, gossip) = (free_port()?, free_port()?, free_port()?);
        let data = brokers.dir.join(name);
        let data = data.to_str().context("temp path")?;
        let mut args = vec!["node", "--replication-factor", &factor, "--data-dir", data];
        args.extend(["--name", name, "--grpc", &grpc, "--http", &http]);
        args.extend(["--gossip", &gossip, "--insecure"]);
        if let Some(seed) = &seed {
            args.extend(["--seed", seed]);
        }
        let log = brokers.dir.join(format!("{name}.log"));
        brokers
            .servers
            .push(Server::start_logging(exe, cpus, &args, config, &log)?);
        ready(&http).await?;
        routes.push(format!("{name}={grpc}"));
        seed.get_or_insert(gossip);
    }
    see_each_other(&brokers.dir, &names).await?;
    let (port, gossip) = (free_port()?, free_port()?);
    let route = routes.join(",");
    let gateway_args = [
        "gateway",
        "--name",
        "g1",
        "--listen",
        &port,
        "--broker",
        &route,
        "--gossip",
        &gossip,
        "--insecure",
    ];
    let gateway = Server::start(exe, cpus, &gateway_args, config)?;
    Ok((gateway, brokers, port))
}

/// Waits until each broker's log (`NAME.log` in `dir`) says every other
/// one is up: their rings agree before the gateway routes by its own.
async fn see_each_other(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    for name in names {
        for other in names.iter().filter(|o| *o != name) {
            let needle = format!("member={other}(");
            loop {
                let log = std::fs::read_to_string(dir.join(format!("{name}.log")))?;
                if log
                    .lines()
                    .any(|l| l.contains("member up") && l.contains(&needle))
                {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("broker {name} never saw {other} within {READY_WAIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// Runs `plan` against the server at `port` once it is ready, then again
/// at each rate of `sweep`.
async fn measure(
    plan: &Plan,
    sweep: &[f64],
    port: &str,
    servers: &[&Server],
) -> anyhow::Result<(Summary, Vec<Step>)> {
    ready(port).await?;
    let mut plan = plan.clone();
    plan.url = format!("ws://{port}/ws");
    plan.server_pids = servers.iter().map(|s| s.pid).collect();
    let summary = switchboard_bench::run(plan.clone()).await?;
    let mut steps = Vec::new();
    for &rate in sweep {
        eprintln!("sweep: {rate} publications/s");
        let at_rate = switchboard_bench::run(Plan {
            rate,
            ..plan.clone()
        })
        .await?;
        let step = Step::of(&at_rate);
        eprintln!(
            "sweep: {rate}/s: p99 {:.2} ms, lost {}, server CPU {:.0}%",
            step.p99_us as f64 / 1000.0,
            step.lost,
            step.cpu_percent
        );
        steps.push(step);
    }
    Ok((summary, steps))
}

fn cpu_per_delivery_us(summary: &Summary) -> f64 {
    let cpu: f64 = summary.servers.iter().map(|s| s.cpu_seconds).sum();
    cpu * 1e6 / summary.delivery.delivered.max(1) as f64
}

/// A server child process, ended when dropped.
struct Server {
    _child: Child,
    pid: u32,
}

impl Server {
    fn start(exe: &Path, cpus: &str, args: &[&str], config: &[String]) -> anyhow::Result<Self> {
        Self::spawn(exe, cpus, args, config, Stdio::null())
    }

    /// [`Server::start`], its log (a server logs on stdout) written to
    /// `log`.
    fn start_logging(
        exe: &Path,
        cpus: &str,
        args: &[&str],
        config: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        Self::spawn(exe, cpus, args, config, Stdio::from(log))
    }

    fn spawn(
        exe: &Path,
        cpus: &str,
        args: &[&str],
        config: &[String],
        stdout: Stdio,
    ) -> anyhow::Result<Self> {
        // taskset execs the server: the child's pid is the server's.
        let child = Command::new("taskset")
            .args(["-c", cpus])
            .arg(exe)
            .args(args)
            .args(config)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `switchboard {}` under taskset", args[0]))?;
        let pid = child.id().context("the server exited at once")?;
        Ok(Self { _child: child, pid })
    }
}

/// Moves every thread of process `pid` to `cpus`.
async fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .await
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset could not pin the tool to cores {cpus}");
    }
    Ok(())
}

/// A loopback address with a port free right now, as HOST:PORT.
fn free_port() -> anyhow::Result<String> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(listener.local_addr()?.to_string())
}

/// Waits until `GET /readyz` at `addr` answers 200.
async fn ready(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    loop {
        if let Ok(true) = readyz(addr).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the server at {addr} was not ready within {READY_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(addr: &str) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(reply.starts_with(b"HTTP/1.1 200"))
}
