//! Clusters of real processes that find each other by gossip: brokers
//! seeded with the first broker's gossip address, gateways with the same
//! seed, all on loopback with ports they pick themselves, each with a
//! certificate from the test binary's CA ([`ClusterCa::shared`]). `bin` is
//! the `switchboard` binary: the tests pass
//! `env!("CARGO_BIN_EXE_switchboard")`.

use std::path::Path;

use anyhow::Context;

use crate::{certificates::ClusterCa, process::Process};

/// The dev config with client rate limits lifted out of the way of
/// scenarios that publish in bursts, written to a file of its own; returns
/// its path.
pub fn scenario_config(tag: &str) -> anyhow::Result<String> {
    scenario_config_with(tag, |c| c)
}

/// [`scenario_config`], edited by `edit` before it is written.
pub fn scenario_config_with(
    tag: &str,
    edit: impl FnOnce(String) -> String,
) -> anyhow::Result<String> {
    let config = include_str!("../../config/dev.toml")
        .replace("rate_per_second = 50.0", "rate_per_second = 100000.0")
        .replace("rate_burst = 100", "rate_burst = 100000");
    anyhow::ensure!(
        config.contains("100000.0"),
        "config/dev.toml changed; update scenario_config"
    );
    let config = edit(config);
    let path = std::env::temp_dir().join(format!(
        "switchboard-{tag}-{}-{}.toml",
        std::process::id(),
        crate::process::free_port()?
    ));
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_str().context("temp path is UTF-8")?.to_owned())
}

/// Starts broker `name`, joining the cluster through `seed` (a gossip
/// address) if given.
pub async fn broker(bin: &Path, name: &str, seed: Option<&str>) -> anyhow::Result<Process> {
    broker_with(bin, name, seed, &[]).await
}

/// [`broker`] with `extra` arguments (e.g. `--data-dir`).
pub async fn broker_with(
    bin: &Path,
    name: &str,
    seed: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<Process> {
    broker_at(bin, (name, "127.0.0.1:0"), seed, extra).await
}

/// [`broker_with`] gossiping on `gossip` (an address, or port 0): a broker
/// restarted at the address the others and the gateways have as their
/// seed is found again without one of its own.
pub async fn broker_at(
    bin: &Path,
    (name, gossip): (&str, &str),
    seed: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<Process> {
    let mut args = vec![
        "node",
        "--name",
        name,
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--gossip",
        gossip,
    ];
    if let Some(seed) = seed {
        args.extend(["--seed", seed]);
    }
    // Without a data directory a broker cannot replicate (the default is
    // 2, which needs one): such a test broker stores each channel alone.
    if !extra.contains(&"--data-dir") {
        args.extend(["--replication-factor", "1"]);
    }
    args.extend(extra);
    let tls = ClusterCa::shared().broker_args(name);
    args.extend(tls.iter().map(String::as_str));
    Process::start_announcing(bin, &args, "grpc://").await
}

/// Starts gateway `name`, finding brokers through `seed`.
pub async fn gateway(bin: &Path, name: &str, seed: &str, config: &str) -> anyhow::Result<Process> {
    let mut args = vec![
        "gateway",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
        "--seed",
        seed,
        "--config",
        config,
    ];
    let tls = ClusterCa::shared().gateway_args(name);
    args.extend(tls.iter().map(String::as_str));
    Process::start(bin, &args).await
}

/// The gossip address broker `b` announced, as a seed for others.
pub fn seed_of(b: &Process) -> anyhow::Result<String> {
    Ok(b.announced("gossip://")
        .context("the broker announced no gossip address")?
        .to_string())
}

/// A counter's value in a Prometheus text exposition (`0` if absent).
/// `series` is the metric name with its labels, as exported.
pub fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Subscribes `client` to `channel`, asking again while the cluster is
/// still forming (no owner yet), for up to two [`crate::WAIT`]s; returns
/// the subscribe reply's `data`.
pub async fn subscribe_once_routed(
    client: &mut crate::client::Client,
    channel: &str,
) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + crate::WAIT * 2;
    loop {
        let r = client
            .request(serde_json::json!({"type": "subscribe", "channel": channel}))
            .await?;
        if r["type"] == "response" {
            return Ok(r["data"].clone());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the cluster never routed {channel}: {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits until `by` declared broker `name` down (its gossip log says so),
/// for up to two [`crate::WAIT`]s.
pub async fn declared_down(by: &Process, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + crate::WAIT * 2;
    let member = format!("member={name}(");
    while !by
        .log()
        .lines()
        .any(|l| l.contains("member down") && l.contains(&member))
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} never declared down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Publishes `data` on `channel` until it is acknowledged (a cluster that
/// is forming or failing over refuses for a while), for up to three
/// [`crate::WAIT`]s; returns the reply's `data` (offset and epoch).
pub async fn publish_acknowledged(
    client: &mut crate::client::Client,
    channel: &str,
    data: &str,
) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + crate::WAIT * 3;
    loop {
        let r = client
            .request(serde_json::json!({"type": "publish", "channel": channel, "data": data}))
            .await?;
        if r["type"] == "response" {
            return Ok(r["data"].clone());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{channel}: never acknowledged: {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
