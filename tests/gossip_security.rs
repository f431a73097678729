//! Gossip that trusts nobody on the network (issue 12), with real
//! processes on loopback: packets sealed with another key, or not sealed
//! at all, are dropped and counted and change nothing; a second node
//! started under a live node's name is refused and exits while the
//! original keeps serving; the gossip key is rotated under load one node
//! at a time; a node with no key and no `--insecure` refuses to start.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_testkit::{
    WAIT,
    api::Http,
    certificates::ClusterCa,
    cluster::{broker, counter, gateway, scenario_config, seed_of, subscribe_once_routed},
    gossip_key::{gossip_key, new_gossip_key},
    http,
    load::Load,
    process::Process,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

const REJECTED_AUTH: &str = "switchboard_gossip_packets_rejected_total{reason=\"auth\"}";
const REJECTED_MALFORMED: &str = "switchboard_gossip_packets_rejected_total{reason=\"malformed\"}";
const CONFLICTS: &str = "switchboard_gossip_identity_conflicts_total";

fn channels(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

/// A broker's (or a gateway's) `/metrics`.
async fn metrics(p: &Process) -> String {
    let addr = p.announced("http://").unwrap_or(p.addr);
    http::get(addr, "/metrics").await.unwrap().1
}

/// Polls `what` until it holds, for up to `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The brokers a gateway routes to, with their uptimes in seconds, by its
/// server API.
async fn routed(gateway: &Process) -> Vec<(String, u64)> {
    let reply = Http::new(gateway.addr, Some("switchboard-dev-api-key"))
        .call("info", json!({}))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut nodes: Vec<(String, u64)> = reply.body["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let name = n["name"].as_str().unwrap_or_default().to_owned();
            (name, n["uptime_seconds"].as_u64().unwrap_or_default())
        })
        .collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    nodes
}

async fn start_node(name: &str, seed: Option<&str>, env: &[(&str, &str)]) -> Process {
    let mut args = vec![
        "node",
        "--replication-factor",
        "1",
        "--name",
        name,
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
    ];
    if let Some(seed) = seed {
        args.extend(["--seed", seed]);
    }
    let tls = ClusterCa::shared().broker_args(name);
    args.extend(tls.iter().map(String::as_str));
    Process::start_with_env(Path::new(BIN), &args, env, "grpc://")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_without_the_key_are_dropped_counted_and_change_nothing() {
    let bin = Path::new(BIN);
    let b1 = broker(bin, "b1", None).await.unwrap();
    let seed = seed_of(&b1).unwrap();
    let config = scenario_config("gossip-sec").unwrap();
    let g1 = gateway(bin, "g1", &seed, &config).await.unwrap();
    eventually("g1 routes to b1", WAIT, || async {
        routed(&g1).await.iter().map(|n| n.0.as_str()).eq(["b1"])
    })
    .await;

    // Garbage and a forged sealed packet, from a socket in the test.
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target: SocketAddr = seed.parse().unwrap();
    raw.send_to(b"hello", target).await.unwrap();
    let mut forged = vec![1u8; 120];
    forged[1..13].copy_from_slice(&[9; 12]);
    raw.send_to(&forged, target).await.unwrap();
    eventually("both are counted", WAIT, || async {
        let m = metrics(&b1).await;
        counter(&m, REJECTED_MALFORMED) >= 1.0 && counter(&m, REJECTED_AUTH) >= 1.0
    })
    .await;

    // A real member with another cluster's key, and one gossiping plain
    // foca packets (no key, --insecure), both seeded with b1.
    let other_key = new_gossip_key("other").unwrap();
    let other_key = other_key.to_str().unwrap();
    let wrong = start_node("b2", Some(&seed), &[("SWITCHBOARD_GOSSIP_KEY", other_key)]).await;
    let plain = start_node(
        "b3",
        Some(&seed),
        &[
            ("SWITCHBOARD_GOSSIP_KEY", ""),
            ("SWITCHBOARD_INSECURE", "true"),
        ],
    )
    .await;
    assert!(
        plain.log().contains("--insecure"),
        "no warning at start: {}",
        plain.log()
    );
    let before = metrics(&b1).await;
    let (auth0, malformed0) = (
        counter(&before, REJECTED_AUTH),
        counter(&before, REJECTED_MALFORMED),
    );
    eventually("their announces are counted", WAIT, || async {
        let m = metrics(&b1).await;
        counter(&m, REJECTED_AUTH) + counter(&m, REJECTED_MALFORMED) >= auth0 + malformed0 + 4.0
    })
    .await;
    // They keep trying (every half second) and keep failing: nothing
    // changed anywhere.
    let m = metrics(&b1).await;
    let seen = counter(&m, REJECTED_AUTH) + counter(&m, REJECTED_MALFORMED);
    eventually("more attempts are counted", WAIT, || async {
        let m = metrics(&b1).await;
        counter(&m, REJECTED_AUTH) + counter(&m, REJECTED_MALFORMED) >= seen + 4.0
    })
    .await;
    assert!(
        routed(&g1).await.iter().map(|n| n.0.as_str()).eq(["b1"]),
        "g1 routes to {:?}",
        routed(&g1).await
    );
    for p in [&b1, &g1] {
        assert!(
            !p.log()
                .lines()
                .any(|l| l.contains("member up") && (l.contains("b2(") || l.contains("b3("))),
            "an outsider joined:\n{}",
            p.log()
        );
    }
    for p in [&wrong, &plain] {
        assert!(
            !p.log().contains("member up"),
            "an outsider learned of a member:\n{}",
            p.log()
        );
    }
    // The real cluster still works.
    let mut c = switchboard_testkit::client::Client::connect(&g1.ws_url())
        .await
        .unwrap();
    subscribe_once_routed(&mut c, "chat:a").await.unwrap();
    c.publish("chat:a", json!("still here")).await.unwrap();
    assert_eq!(c.message("chat:a").await.unwrap()["data"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_live_name_is_refused_and_the_original_keeps_serving() {
    let bin = Path::new(BIN);
    let b1_started = Instant::now();
    let b1 = broker(bin, "b1", None).await.unwrap();
    let seed = seed_of(&b1).unwrap();
    let b2 = broker(bin, "b2", Some(&seed)).await.unwrap();
    let config = scenario_config("gossip-dup").unwrap();
    let g1 = gateway(bin, "g1", &seed, &config).await.unwrap();
    let g2 = gateway(bin, "g2", &seed, &config).await.unwrap();
    for g in [&g1, &g2] {
        eventually("the gateways route to b1 and b2", WAIT, || async {
            routed(g).await.len() == 2
        })
        .await;
    }
    let load = Load::start(&g1.ws_url(), &g2.ws_url(), channels("dup", 24))
        .await
        .unwrap();
    // Load for a while first; and the original b1 is to be told from the
    // impostor by its uptime (whole seconds): 3 s apart at least.
    let apart = Duration::from_secs(3);
    tokio::time::sleep(
        apart
            .saturating_sub(b1_started.elapsed())
            .max(Duration::from_millis(500)),
    )
    .await;

    // A stock `switchboard node --name b1` with the cluster's key, seeded
    // with b2 (the copy-pasted compose service).
    let b2_seed = seed_of(&b2).unwrap();
    let mut impostor = broker(bin, "b1", Some(&b2_seed)).await.unwrap();
    let started = Instant::now();
    let status = impostor.exited(WAIT * 3).await.unwrap();
    assert_eq!(status.code(), Some(2), "{}", impostor.log());
    let expected = format!("error: another member named b1 is live at {seed}; refusing to start");
    assert!(
        impostor.log().lines().any(|l| l == expected),
        "no {expected:?} in:\n{}",
        impostor.log()
    );
    println!("impostor exited after {:?}", started.elapsed());
    // Traffic goes on a while after it left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let delivered = load.finish().await.unwrap();
    println!("{} acknowledged, all delivered", delivered.acknowledged);

    // Every node counted the refusal; none ever saw b1 go.
    for p in [&b1, &b2] {
        assert!(counter(&metrics(p).await, CONFLICTS) >= 1.0, "{}", p.log());
    }
    for p in [&b1, &b2, &g1, &g2] {
        assert!(
            !p.log()
                .lines()
                .any(|l| l.contains("member down") && l.contains("b1(")),
            "b1 went down in a view:\n{}",
            p.log()
        );
    }
    // The views still hold the original b1: the gateways reach it (its
    // uptime is the original's), and so does a gateway that joins now
    // through b2.
    let g3 = gateway(bin, "g3", &b2_seed, &config).await.unwrap();
    for g in [&g1, &g2, &g3] {
        eventually("routing to the original b1", WAIT, || async {
            let nodes = routed(g).await;
            let original = b1_started.elapsed().as_secs().saturating_sub(1);
            nodes.len() == 2 && nodes[0].0 == "b1" && nodes[0].1 >= original
        })
        .await;
    }
    let load = Load::start(&g3.ws_url(), &g1.ws_url(), channels("after", 8))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish().await.unwrap();
}

/// Writes `keys` (lines) to `path` and waits until `node` has reloaded them.
async fn rewrite(node: &Process, path: &Path, keys: &[&str]) {
    let reloads = node.log().matches("gossip keys reloaded").count();
    std::fs::write(path, keys.join("\n") + "\n").unwrap();
    eventually(
        "the node reloads its keys",
        switchboard_cluster::keyring::RELOAD_EVERY * 3,
        || async { node.log().matches("gossip keys reloaded").count() > reloads },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_gossip_key_under_load_one_node_at_a_time_loses_nothing() {
    let old = std::fs::read_to_string(gossip_key()).unwrap();
    let old = old.trim();
    let new = switchboard_cluster::keyring::generate_key();
    // A key file per node, as each pod mounts its own.
    let files: Vec<PathBuf> = (0..4)
        .map(|i| {
            let path = new_gossip_key(&format!("rotate{i}")).unwrap();
            std::fs::write(&path, format!("{old}\n")).unwrap();
            path
        })
        .collect();
    let env = |i: usize| [("SWITCHBOARD_GOSSIP_KEY", files[i].to_str().unwrap())];
    let b1 = start_node("b1", None, &env(0)).await;
    let seed = seed_of(&b1).unwrap();
    let b2 = start_node("b2", Some(&seed), &env(1)).await;
    let config = scenario_config("gossip-rotate").unwrap();
    let gateway = |name: &str, i: usize| {
        let args = [
            "gateway",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--seed",
            &seed,
            "--config",
            &config,
        ]
        .map(str::to_owned);
        let tls = ClusterCa::shared().gateway_args(name);
        let env = env(i).map(|(k, v)| (k, v.to_owned()));
        async move {
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            args.extend(tls.iter().map(String::as_str));
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Process::start_with_env(Path::new(BIN), &args, &env, "ws://")
                .await
                .unwrap()
        }
    };
    let g1 = gateway("g1", 2).await;
    let g2 = gateway("g2", 3).await;
    for g in [&g1, &g2] {
        eventually("the gateways route to b1 and b2", WAIT, || async {
            routed(g).await.len() == 2
        })
        .await;
    }
    let nodes = [&b1, &b2, &g1, &g2];
    let load = Load::start(&g1.ws_url(), &g2.ws_url(), channels("rotate", 16))
        .await
        .unwrap();

    // Add the new key second, promote it first, remove the old: each step
    // on every node in turn before the next step starts.
    for step in [
        vec![old, new.as_str()],
        vec![new.as_str(), old],
        vec![new.as_str()],
    ] {
        for (node, file) in nodes.iter().zip(&files) {
            rewrite(node, file, &step).await;
        }
    }
    // A key file that stops parsing keeps the keys in use, with an error.
    std::fs::write(&files[3], "no longer a key\n").unwrap();
    eventually(
        "g2 refuses the broken file",
        switchboard_cluster::keyring::RELOAD_EVERY * 3,
        || async { g2.log().contains("gossip key file refused") },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = load.finish().await.unwrap();
    println!(
        "{} acknowledged across the rotation, all delivered",
        delivered.acknowledged
    );

    // Nobody ever refused a packet or lost a member.
    for p in nodes {
        let m = metrics(p).await;
        assert_eq!(
            counter(&m, REJECTED_AUTH) + counter(&m, REJECTED_MALFORMED),
            0.0,
            "{m}"
        );
        assert!(!p.log().contains("member down"), "{}", p.log());
    }
    for g in [&g1, &g2] {
        assert_eq!(routed(g).await.len(), 2);
    }
    // The old key no longer gets in.
    let old_only = new_gossip_key("old-only").unwrap();
    std::fs::write(&old_only, format!("{old}\n")).unwrap();
    let outsider = start_node(
        "b3",
        Some(&seed),
        &[("SWITCHBOARD_GOSSIP_KEY", old_only.to_str().unwrap())],
    )
    .await;
    eventually("the old key is refused", WAIT, || async {
        counter(&metrics(&b1).await, REJECTED_AUTH) >= 1.0
    })
    .await;
    assert!(!outsider.log().contains("member up"));
}

/// Runs `switchboard ARGS` to its exit, without the test run's gossip key.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(BIN)
            .args(args)
            .env_remove("SWITCHBOARD_GOSSIP_KEY")
            .env_remove("SWITCHBOARD_INSECURE")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits in time")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_node_or_gateway_without_credentials_refuses_to_start() {
    // With certificates given, the gossip key alone is missing.
    let missing = "error: cluster credentials missing: --gossip-key (or --insecure for a cluster that trusts its network)";
    let node_tls = ClusterCa::shared().broker_args("b1");
    let mut node = vec![
        "node",
        "--replication-factor",
        "1",
        "--name",
        "b1",
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
    ];
    node.extend(node_tls.iter().map(String::as_str));
    let (code, stderr) = refused(&node, &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.lines().any(|l| l == missing), "{stderr}");
    let gateway_tls = ClusterCa::shared().gateway_args("g1");
    let mut gateway = vec![
        "gateway",
        "--name",
        "g1",
        "--listen",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
        "--seed",
        "127.0.0.1:1",
    ];
    gateway.extend(gateway_tls.iter().map(String::as_str));
    let (code, stderr) = refused(&gateway, &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.lines().any(|l| l == missing), "{stderr}");
    // `--insecure=false` is no way around it.
    let (code, _) = refused(&node, &[("SWITCHBOARD_INSECURE", "false")]).await;
    assert_eq!(code, Some(2));
    // A key file that does not parse refuses too, naming the file.
    let bad = new_gossip_key("bad").unwrap();
    std::fs::write(&bad, "not a key\n").unwrap();
    let (code, stderr) = refused(&node, &[("SWITCHBOARD_GOSSIP_KEY", bad.to_str().unwrap())]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(bad.to_str().unwrap()) && stderr.contains("not base64"),
        "{stderr}"
    );
    // So does a config file's `[cluster_security]` without a key; with
    // `insecure = true` it starts, warning.
    let config =
        std::env::temp_dir().join(format!("switchboard-insecure-{}.toml", std::process::id()));
    let dev = include_str!("../config/dev.toml");
    std::fs::write(
        &config,
        format!("{dev}\n[cluster_security]\ninsecure = true\n"),
    )
    .unwrap();
    let mut with_file: Vec<&str> = node.clone();
    with_file.extend(["--config", config.to_str().unwrap()]);
    let mut started = Process::start_with_env(
        Path::new(BIN),
        &with_file,
        &[("SWITCHBOARD_GOSSIP_KEY", "")],
        "grpc://",
    )
    .await
    .unwrap();
    assert!(started.log().contains("--insecure"), "{}", started.log());
    started.terminate().await.unwrap();
    std::fs::remove_file(&config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_with_a_live_name_exits_and_the_first_keeps_serving() {
    let bin = Path::new(BIN);
    let b1 = broker(bin, "b1", None).await.unwrap();
    let seed = seed_of(&b1).unwrap();
    let config = scenario_config("gossip-twin").unwrap();
    let g1 = gateway(bin, "g1", &seed, &config).await.unwrap();
    eventually("g1 routes to b1", WAIT, || async {
        routed(&g1).await.len() == 1
    })
    .await;
    let mut twin = gateway(bin, "g1", &seed, &config).await.unwrap();
    let status = twin.exited(WAIT * 3).await.unwrap();
    assert_eq!(status.code(), Some(2), "{}", twin.log());
    assert!(
        twin.log().lines().any(|l| l
            .strip_prefix("error: another member named g1 is live at 127.0.0.1:")
            .is_some_and(|rest| rest.ends_with("; refusing to start"))),
        "{}",
        twin.log()
    );
    assert!(counter(&metrics(&b1).await, CONFLICTS) >= 1.0);
    let mut c = switchboard_testkit::client::Client::connect(&g1.ws_url())
        .await
        .unwrap();
    subscribe_once_routed(&mut c, "chat:twin").await.unwrap();
    c.publish("chat:twin", json!("one g1")).await.unwrap();
    assert_eq!(c.message("chat:twin").await.unwrap()["data"], "one g1");
}
