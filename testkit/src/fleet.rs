//! The processes of a fault scenario: brokers that can be stopped and
//! started again under the same name at the same addresses (a restart
//! keeps its ring place and gossip address, as a restarted pod with a
//! stable address would), and two gateways. Every process gossips with
//! every broker as a seed, so that any one of them may be down.
//!
//! Every broker keeps its data directory (`--data-dir`: its replication
//! votes) across restarts, under one directory per fleet, removed on drop.
//!
//! One broker may run inside a [`Partition`]'s network namespace; the
//! others then bind the host end of its link instead of loopback, so that
//! it can reach them and they it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use switchboard_cluster::ring::Ring;

use crate::{
    WAIT,
    certificates::ClusterCa,
    cluster::scenario_config,
    partition::Partition,
    process::{Process, free_port},
};

/// Where a broker listens; kept across restarts.
#[derive(Clone, Debug)]
pub struct BrokerSpec {
    pub name: String,
    pub ip: IpAddr,
    pub grpc: u16,
    pub http: u16,
    pub gossip: u16,
    /// The network namespace it runs in, if not the host's.
    pub netns: Option<String>,
}

impl BrokerSpec {
    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.gossip)
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.http)
    }
}

/// Extra command-line arguments for broker `name`, the same at every
/// start (a data directory named after it, a config with a replication
/// factor).
pub type BrokerArgs = fn(&str) -> Vec<String>;

/// Brokers and gateways of one scenario; every process is killed on drop.
pub struct Fleet {
    bin: PathBuf,
    broker_args: Option<BrokerArgs>,
    data: PathBuf,
    host: IpAddr,
    specs: BTreeMap<String, BrokerSpec>,
    /// The brokers running now, by name.
    pub brokers: BTreeMap<String, Process>,
    pub gateways: Vec<Process>,
    /// The logs of brokers that were stopped or killed, in that order.
    pub retired: Vec<(String, String)>,
    /// Kept last: the namespace goes once its broker is gone.
    pub partition: Option<Partition>,
}

impl Fleet {
    /// Starts brokers `b1..=bN` (each with `broker_args`, if given) and
    /// gateways `g1`, `g2`; with `partition`, the last broker runs in its
    /// network namespace. Returns once both gateways know every broker.
    pub async fn start(
        bin: &Path,
        brokers: usize,
        broker_args: Option<BrokerArgs>,
        partition: Option<Partition>,
    ) -> anyhow::Result<Self> {
        let host = partition
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), Partition::host_ip);
        let mut fleet = Self {
            bin: bin.to_owned(),
            broker_args,
            data: std::env::temp_dir().join(format!(
                "switchboard-fleet-{}-{}",
                std::process::id(),
                free_port()?
            )),
            host,
            specs: BTreeMap::new(),
            brokers: BTreeMap::new(),
            gateways: Vec::new(),
            retired: Vec::new(),
            partition,
        };
        for i in 1..=brokers {
            let inside = (i == brokers)
                .then_some(fleet.partition.as_ref())
                .flatten()
                .map(|p| (p.ns_ip(), p.name().to_owned()));
            fleet.plan(&format!("b{i}"), inside)?;
        }
        let names: Vec<String> = fleet.specs.keys().cloned().collect();
        for name in &names {
            fleet.start_broker(name).await?;
        }
        let config = scenario_config("faults")?;
        for g in ["g1", "g2"] {
            let gateway = fleet.start_gateway(g, &config).await?;
            fleet.gateways.push(gateway);
        }
        for name in &names {
            fleet.wait_up(name, &[0, 0]).await?;
        }
        Ok(fleet)
    }

    /// The extra arguments of every broker started from now on.
    pub fn set_broker_args(&mut self, args: Option<BrokerArgs>) {
        self.broker_args = args;
    }

    /// Reserves addresses for a new broker `name` (not started).
    pub fn plan(&mut self, name: &str, inside: Option<(IpAddr, String)>) -> anyhow::Result<()> {
        let (ip, netns) = match inside {
            Some((ip, ns)) => (ip, Some(ns)),
            None => (self.host, None),
        };
        // Checked on the host: a namespace's ports are its own, all free.
        let spec = BrokerSpec {
            name: name.to_owned(),
            ip,
            grpc: stable_port(self.host)?,
            http: stable_port(self.host)?,
            gossip: stable_port(self.host)?,
            netns,
        };
        self.specs.insert(name.to_owned(), spec);
        Ok(())
    }

    pub fn spec(&self, name: &str) -> anyhow::Result<&BrokerSpec> {
        self.specs
            .get(name)
            .with_context(|| format!("no broker {name}"))
    }

    /// The names of the brokers running now.
    pub fn running(&self) -> Vec<String> {
        self.brokers.keys().cloned().collect()
    }

    /// The ring of the brokers running now.
    pub fn ring(&self) -> Ring {
        Ring::new(self.running())
    }

    /// `--seed` for every planned broker but `except`.
    fn seeds(&self, except: &str) -> Vec<String> {
        self.specs
            .values()
            .filter(|s| s.name != except)
            .flat_map(|s| ["--seed".to_owned(), s.gossip_addr().to_string()])
            .collect()
    }

    /// Starts (or starts again) broker `name` at its planned addresses.
    pub async fn start_broker(&mut self, name: &str) -> anyhow::Result<()> {
        let spec = self.spec(name)?.clone();
        let mut args: Vec<String> = ["node", "--name", name].map(str::to_owned).to_vec();
        for (flag, port) in [
            ("--grpc", spec.grpc),
            ("--http", spec.http),
            ("--gossip", spec.gossip),
        ] {
            args.extend([flag.to_owned(), SocketAddr::new(spec.ip, port).to_string()]);
        }
        args.extend(self.seeds(name));
        let data = self.data.join(name);
        std::fs::create_dir_all(&data)?;
        args.extend([
            "--data-dir".to_owned(),
            data.to_str().context("data path")?.to_owned(),
        ]);
        // Scenarios choose replication in their broker arguments (a config
        // file); without any, each channel is stored on its owner alone.
        match self.broker_args {
            Some(extra) => args.extend(extra(name)),
            None => args.extend(["--replication-factor".to_owned(), "1".to_owned()]),
        }
        args.extend(ClusterCa::shared().broker_args(name));
        let process = match &spec.netns {
            Some(ns) => {
                let mut wrapped: Vec<String> =
                    ["netns", "exec", ns.as_str()].map(str::to_owned).to_vec();
                wrapped.push(self.bin.to_str().context("binary path")?.to_owned());
                wrapped.extend(args);
                let wrapped: Vec<&str> = wrapped.iter().map(String::as_str).collect();
                Process::start_announcing(Path::new("ip"), &wrapped, "grpc://").await?
            }
            None => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Process::start_announcing(&self.bin, &args, "grpc://").await?
            }
        };
        self.brokers.insert(name.to_owned(), process);
        Ok(())
    }

    async fn start_gateway(&self, name: &str, config: &str) -> anyhow::Result<Process> {
        let listen = SocketAddr::new(self.host, 0).to_string();
        let gossip = SocketAddr::new(self.host, stable_port(self.host)?).to_string();
        let mut args: Vec<String> = [
            "gateway", "--name", name, "--listen", &listen, "--gossip", &gossip, "--config", config,
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(self.seeds(""));
        args.extend(ClusterCa::shared().gateway_args(name));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::start(&self.bin, &args).await
    }

    /// How often each gateway has logged broker `name` up and active, for
    /// [`Fleet::wait_up`] after a restart.
    pub fn ups(&self, name: &str) -> Vec<usize> {
        let needle = format!("{name}(Broker,Active");
        self.gateways
            .iter()
            .map(|g| {
                g.log()
                    .lines()
                    .filter(|l| l.contains("member up") && l.contains(&needle))
                    .count()
            })
            .collect()
    }

    /// Waits until every gateway has logged broker `name` up and active
    /// more often than `before` (from [`Fleet::ups`]) says.
    pub async fn wait_up(&self, name: &str, before: &[usize]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            let now = self.ups(name);
            if now.iter().zip(before).all(|(n, b)| n > b) {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the gateways never saw {name} up and active"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Broker `name`, running.
    pub fn broker(&mut self, name: &str) -> anyhow::Result<&mut Process> {
        self.brokers
            .get_mut(name)
            .with_context(|| format!("{name} is not running"))
    }

    /// Kills broker `name` (SIGKILL), keeping its log.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let mut p = self.take(name)?;
        p.kill().await?;
        self.retired.push((format!("{name} (killed)"), p.log()));
        Ok(())
    }

    /// Stops broker `name` (SIGTERM: it drains), keeping its log; fails
    /// unless it exits with status 0.
    pub async fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let mut p = self.take(name)?;
        let status = p.terminate().await?;
        let _ = p.exited(WAIT).await;
        self.retired.push((format!("{name} (stopped)"), p.log()));
        anyhow::ensure!(status.success(), "{name} exited with {status}");
        Ok(())
    }

    fn take(&mut self, name: &str) -> anyhow::Result<Process> {
        self.brokers
            .remove(name)
            .with_context(|| format!("{name} is not running"))
    }

    /// Every process's log, by name: the retired brokers', then the
    /// running ones'.
    pub fn logs(&self) -> Vec<(String, String)> {
        let brokers = self.brokers.iter().map(|(n, p)| (n.clone(), p.log()));
        let gateways = self
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("g{}", i + 1), g.log()));
        let retired = self.retired.iter().cloned();
        retired.chain(brokers).chain(gateways).collect()
    }

    /// The gateways' client URLs.
    pub fn ws_urls(&self) -> Vec<String> {
        self.gateways.iter().map(Process::ws_url).collect()
    }

    /// The gateways' addresses (server API on the client port).
    pub fn gateway_addrs(&self) -> Vec<SocketAddr> {
        self.gateways.iter().map(|g| g.addr).collect()
    }
}

/// A port free on `ip` for TCP and UDP now, below the kernel's ephemeral
/// range (32768 and up), so that no socket bound to port 0 in the meantime
/// takes it before a broker restarts on it.
fn stable_port(ip: IpAddr) -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    static DRAWN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let mut seed = u64::from(nanos) ^ (u64::from(std::process::id()) << 32);
    for _ in 0..1000 {
        seed = seed
            .wrapping_add(DRAWS.fetch_add(1, Ordering::Relaxed))
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20000 + ((seed >> 33) % 12000) as u16;
        let addr = SocketAddr::new(ip, port);
        // Free now is not enough: fleets of scenarios running side by side
        // plan their ports before starting their processes, so each port
        // is drawn once per test process.
        if std::net::TcpListener::bind(addr).is_ok()
            && std::net::UdpSocket::bind(addr).is_ok()
            && DRAWN.lock().unwrap_or_else(|e| e.into_inner()).insert(port)
        {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on {ip} below the ephemeral range")
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
