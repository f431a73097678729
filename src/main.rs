//! `switchboard`: one binary, one subcommand per role.

mod ca;
mod cluster;
mod cluster_bench;
mod config;
mod dev_secrets;
mod edge_tls;
mod health;
mod log_filter;
mod open_files;
mod pinned_cert;
mod security;
mod token;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_core::BrokerAddr;
use switchboard_gateway::Listeners;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    edge_tls::EdgeTlsArgs,
    security::{Refusal, SecurityArgs},
    token::KeyAlg,
};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Real-time messaging over WebSockets"
)]
struct Cli {
    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, global = true, env = "SWITCHBOARD_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "SWITCHBOARD_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway and broker in one process, on the embedded default config.
    Dev {
        /// Address to listen on [default: the config's `listen`, 127.0.0.1:8000].
        #[arg(long, env = "SWITCHBOARD_LISTEN")]
        listen: Option<SocketAddr>,
        /// A TOML config file instead of the embedded default.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        /// Serve the server API on this address instead of the client port
        /// [default: the config's `api.listen`].
        #[arg(long, env = "SWITCHBOARD_API_LISTEN")]
        api_listen: Option<SocketAddr>,
        #[command(flatten)]
        edge_tls: EdgeTlsArgs,
    },
    /// A broker: owns channels (history, presence, fan-out) for gateways.
    Node {
        /// This broker's stable name: the ring places channels by it.
        #[arg(long, env = "SWITCHBOARD_NAME")]
        name: String,
        /// gRPC address gateways reach this broker on.
        #[arg(long, env = "SWITCHBOARD_GRPC", default_value = "127.0.0.1:7000")]
        grpc: SocketAddr,
        /// The gRPC address to tell others, if not the bound one (e.g. the pod IP).
        #[arg(long, env = "SWITCHBOARD_ADVERTISE")]
        advertise: Option<String>,
        /// HTTP address for /metrics, /healthz and /readyz.
        #[arg(long, env = "SWITCHBOARD_HTTP", default_value = "127.0.0.1:9000")]
        http: SocketAddr,
        /// Where the broker keeps its replication votes (over `[broker]
        /// data_dir`); without one it votes for nobody.
        #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Brokers that store each channel, 1 to 3 (over `[broker]
        /// replication_factor`; default 2); 2 or more needs a data
        /// directory.
        #[arg(long, env = "SWITCHBOARD_REPLICATION_FACTOR",
              value_parser = clap::value_parser!(u8).range(1..=3))]
        replication_factor: Option<u8>,
        /// With 2 or more: `serve` or `refuse` a channel that cannot be
        /// replicated from this broker (no majority of its voters, or fewer
        /// than R brokers, reachable), over `[broker] lost_majority`
        /// (default refuse; docs/replication.md "A lost majority").
        #[arg(long, env = "SWITCHBOARD_LOST_MAJORITY")]
        lost_majority: Option<switchboard_cluster::replication::LostMajority>,
        #[command(flatten)]
        gossip: GossipArgs,
        #[command(flatten)]
        security: SecurityArgs,
        /// A TOML config file instead of the embedded default.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// A gateway: client WebSockets, routed to the brokers that own each channel.
    Gateway {
        /// This gateway's stable name.
        #[arg(long, env = "SWITCHBOARD_NAME")]
        name: String,
        /// Address clients connect to (WebSocket at /ws, plus /metrics, /healthz, /readyz).
        #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// A broker, as NAME=HOST:PORT (repeat, or separate with commas):
        /// a static cluster, instead of gossip.
        #[arg(long = "broker", env = "SWITCHBOARD_BROKERS", value_delimiter = ',', value_parser = cluster::parse_broker)]
        brokers: Vec<BrokerAddr>,
        #[command(flatten)]
        gossip: GossipArgs,
        #[command(flatten)]
        security: SecurityArgs,
        #[command(flatten)]
        edge_tls: EdgeTlsArgs,
        /// A TOML config file instead of the embedded default.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The cluster's certificate authority: `ca init`, then `ca issue` per node.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Print a token that the config accepts.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        user: String,
        /// How long the token is valid, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Glob patterns of channels the user may use (repeat or separate with commas).
        #[arg(long, value_delimiter = ',')]
        channels: Option<Vec<String>>,
        /// The config whose HS256 secret signs the token, and whose audience,
        /// issuer and longest lifetime it follows [default: embedded dev config].
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        /// Sign with this private key (PEM) instead of the HS256 secret.
        #[arg(long, requires = "alg")]
        key: Option<PathBuf>,
        /// The algorithm of `--key`.
        #[arg(long, value_enum)]
        alg: Option<KeyAlg>,
    },
    /// Probe a running role's HTTP port (the container healthcheck): exit
    /// status 0 for a 2xx answer, 1 otherwise.
    Health {
        /// The URL to GET [default: http://127.0.0.1:PORT/healthz, PORT from
        /// SWITCHBOARD_HTTP (node), else SWITCHBOARD_LISTEN (gateway, dev),
        /// else 8000].
        #[arg(long, env = "SWITCHBOARD_HEALTH_URL")]
        url: Option<String>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Load a running server: connections, fan-out, latency, memory
    /// (docs/benchmarks.md). Progress on stderr, a JSON summary on stdout.
    Bench {
        #[command(flatten)]
        plan: switchboard_bench::Plan,
        #[command(flatten)]
        cluster: cluster_bench::ClusterArgs,
    },
}

/// Gossip membership flags, shared by nodes and gateways.
#[derive(clap::Args)]
struct GossipArgs {
    /// UDP address to gossip on, HOST:PORT. It is also the address this
    /// member announces, so it must be one the others reach: not 0.0.0.0.
    /// A host name is resolved once at start (a container's own hostname,
    /// or `$(POD_IP):7946` in Kubernetes).
    #[arg(
        long = "gossip",
        env = "SWITCHBOARD_GOSSIP",
        default_value = "127.0.0.1:7946"
    )]
    bind: String,
    /// Another member's gossip address, HOST:PORT; DNS names resolving to
    /// several addresses (a headless service) are fine. Repeat or separate
    /// with commas.
    #[arg(long = "seed", env = "SWITCHBOARD_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
}

impl From<GossipArgs> for cluster::Gossip {
    fn from(a: GossipArgs) -> Self {
        Self {
            bind: a.bind,
            seeds: a.seeds,
        }
    }
}

/// Exit code 2 for a refusal to run (credentials missing, a name already
/// live in the cluster), with its one line on stderr; 1 for any other error.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(refusal) = e.downcast_ref::<Refusal>() {
                tracing::error!(error = %refusal, "refusing to run");
                eprintln!("error: {refusal}");
                std::process::ExitCode::from(2)
            } else {
                eprintln!("Error: {e:?}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// Logging, and the open-file limit for the roles that hold connections.
fn prepare(cli: &Cli) {
    // The bench prints its summary on stdout: logs go elsewhere.
    let to_stderr = matches!(cli.command, Command::Bench { .. });
    init_tracing(&cli.log, cli.log_json, to_stderr);
    if matches!(
        cli.command,
        Command::Dev { .. }
            | Command::Node { .. }
            | Command::Gateway { .. }
            | Command::Bench { .. }
    ) {
        // Each connection is a file descriptor; the default soft limit
        // would stop these roles at about a thousand.
        open_files::raise_and_log();
    }
}

/// See [`dev_secrets`]: for the roles that serve clients.
fn refuse_exposed_dev_secrets(config: &Config) -> anyhow::Result<()> {
    let published = std::env::var(dev_secrets::PUBLISHED_AT).ok();
    Ok(dev_secrets::check(config, published.as_deref())?)
}

/// The config of a role that serves clients: the file, the TLS flags over
/// it, and the refusal of development secrets where they would be exposed.
fn client_role_config(edge_tls: EdgeTlsArgs, path: Option<&Path>) -> anyhow::Result<Config> {
    let config = edge_tls.config(path)?;
    refuse_exposed_dev_secrets(&config)?;
    Ok(config)
}

/// A broker's config: the file, with `--data-dir`, `--replication-factor`
/// and `--lost-majority` over it.
fn node_config(
    path: Option<&Path>,
    data_dir: Option<PathBuf>,
    (replication_factor, lost_majority): (
        Option<u8>,
        Option<switchboard_cluster::replication::LostMajority>,
    ),
) -> anyhow::Result<Config> {
    let mut config = Config::load(path)?;
    if let Some(lost_majority) = lost_majority {
        config.broker.lost_majority = lost_majority;
    }
    if data_dir.is_some() {
        config.broker.data_dir = data_dir;
    }
    if let Some(factor) = replication_factor {
        config.broker.replication_factor = usize::from(factor);
    }
    Ok(config)
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    prepare(&cli);
    match cli.command {
        Command::Dev {
            listen,
            config,
            api_listen,
            edge_tls,
        } => {
            let config = client_role_config(edge_tls, config.as_deref())?;
            block_on(on_signal(|shutdown| {
                dev(config, listen, api_listen, shutdown)
            }))
        }
        Command::Node {
            name,
            grpc,
            advertise,
            http,
            data_dir,
            replication_factor,
            lost_majority,
            gossip,
            security,
            config,
        } => {
            let replication = (replication_factor, lost_majority);
            let config = node_config(config.as_deref(), data_dir, replication)?;
            block_on(on_signal(|signal| {
                let node = cluster::Node {
                    name,
                    grpc,
                    advertise,
                    http,
                    gossip: gossip.into(),
                    security,
                };
                cluster::run_node(config, node, signal)
            }))
        }
        Command::Gateway {
            name,
            listen,
            brokers,
            gossip,
            security,
            edge_tls,
            config,
        } => {
            let config = client_role_config(edge_tls, config.as_deref())?;
            block_on(on_signal(|signal| {
                let gateway = cluster::Gateway {
                    name,
                    listen,
                    brokers,
                    gossip: gossip.into(),
                    security,
                };
                cluster::run_gateway(config, gateway, signal)
            }))
        }
        Command::Ca { command } => ca::run(command),
        Command::Token {
            user,
            ttl,
            channels,
            config,
            key,
            alg,
        } => {
            let issuer = token::issuer(config.as_deref(), key.as_deref(), alg, ttl)?;
            println!("{}", issuer.issue(&user, ttl, channels));
            Ok(())
        }
        Command::Health { url, timeout } => health::run(url, timeout),
        Command::Bench { plan, cluster } => bench(plan, &cluster),
    }
}

async fn dev(
    config: Config,
    listen: Option<SocketAddr>,
    api_listen: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listen
        .or(config.listen)
        .unwrap_or_else(|| ([127, 0, 0, 1], 8000).into());
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let api_listener = match api_listen.or(config.api.listen) {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the API address {addr}"))?,
        ),
        None => None,
    };
    let api_local = match &api_listener {
        Some(l) => l.local_addr()?,
        None => local,
    };
    let ws = edge_tls::ws_scheme(&config.gateway);
    let http = if ws == "wss" { "https" } else { "http" };
    tracing::info!("switchboard dev: {ws}://{local}/ws (metrics at {http}://{local}/metrics)");
    tracing::info!(
        "server API: {http}://{api_local}/api/ (HTTP JSON and gRPC switchboard.api.v1.Api; docs/api.md)"
    );
    let listeners = Listeners {
        client: listener,
        api: api_listener,
    };
    let settings = config.gateway_settings();
    switchboard_gateway::dev::run(listeners, settings, config.broker, shutdown).await?;
    Ok(())
}

/// `switchboard bench`: one run against a server, or with `--cluster` the
/// comparison of dev with a gateway and its broker; JSON on stdout.
fn bench(
    plan: switchboard_bench::Plan,
    cluster: &cluster_bench::ClusterArgs,
) -> anyhow::Result<()> {
    let report = if cluster.cluster {
        block_on(cluster_bench::run(plan, cluster))?
    } else {
        let summary = block_on(async { Ok(switchboard_bench::run(plan).await?) })?;
        serde_json::to_string_pretty(&summary)?
    };
    println!("{report}");
    Ok(())
}

/// Runs a role to completion on a multi-threaded runtime.
fn block_on<T>(role: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Runtime::new()?.block_on(role)
}

/// The one shutdown path: SIGTERM or SIGINT cancels the token `role` is
/// given. The signal watcher is tracked and ends with the role.
async fn on_signal<F, Fut>(role: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let token = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(watch_signals(token.clone()));
    let result = role(token.clone()).await;
    token.cancel();
    tasks.close();
    tasks.wait().await;
    result
}

/// Cancels `token` on SIGTERM or SIGINT; returns once it is cancelled.
async fn watch_signals(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let signalled = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    };
    #[cfg(not(unix))]
    let signalled = async {
        let _ = ctrl_c.await;
    };
    tokio::select! {
        () = token.cancelled() => {}
        () = signalled => {
            tracing::info!("shutdown requested");
            token.cancel();
        }
    }
}

fn init_tracing(filter: &str, json: bool, to_stderr: bool) {
    use std::io::IsTerminal;

    use tracing_subscriber::{fmt, fmt::writer::BoxMakeWriter, prelude::*};
    let filter = log_filter::directives(filter);
    let log_level = log_filter::log_max_level(&filter);
    let (writer, terminal) = if to_stderr {
        (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        )
    } else {
        (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        )
    };
    if json {
        fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .json()
            .finish()
            .with(log_filter::cap())
            .init();
    } else {
        fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(terminal)
            .finish()
            .with(log_filter::cap())
            .init();
    }
    // After `init`, which set it from the whole subscriber's hint.
    log::set_max_level(log_level);
}
