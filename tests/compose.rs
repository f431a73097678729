//! The compose cluster (docker-compose.yml) as users run it: three brokers,
//! two gateways behind one HAProxy entry point, Prometheus scraping every
//! node. The images are built without a registry by deploy/local-images.sh
//! (the script developers use) from this build's binary; the cluster runs
//! under a Compose project of its own and is always brought down with its
//! volumes (`down -v`), pass or fail.
//!
//! One scenario, every wait bounded:
//! 1. the cluster forms: each gateway reports all three brokers, and the
//!    entry point spreads new connections over both gateways;
//! 2. WebSocket clients on each gateway and through the entry point
//!    subscribe and publish across gateways;
//! 3. the README's compose example runs as written;
//! 4. `docker kill` of the broker owning the most channels: publishing
//!    resumes on every channel, subscribers get what is published;
//!    `docker start` brings it back into the ring;
//! 5. `docker network disconnect` of another channel owner: the others
//!    declare it down and its channels move; `docker network connect`: it
//!    rejoins, serves its channels again, and Prometheus sees it publish;
//! 6. Prometheus reports every node's target up and holds the metrics the
//!    Grafana dashboard charts.
//!
//! Needs Docker Engine with Compose (`docker compose` or `docker-compose`),
//! curl, and apt-get (Debian's haproxy and prometheus are downloaded once,
//! into target/deploy/). Without Docker it fails, saying so: it never skips.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchboard_testkit::{
    WAIT,
    api::Http,
    client::Client,
    compose::{self, Compose, docker},
    prometheus::Prometheus,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const README: &str = include_str!("../README.md");
const DOCKERFILE: &str = include_str!("../Dockerfile");
const DOCKERFILE_LOCAL: &str = include_str!("../deploy/image/Dockerfile.local");
const DASHBOARD: &str = include_str!("../deploy/grafana/switchboard.json");
/// The development API key of the embedded config, which the cluster runs.
const API_KEY: &str = "switchboard-dev-api-key";
const BROKERS: [&str; 3] = ["b1", "b2", "b3"];
/// Host addresses the README uses, replaced by the test's own ports.
const DOC_ENTRY: &str = "127.0.0.1:8000";
const DOC_PROMETHEUS: &str = "127.0.0.1:9090";

/// Both image paths share one runtime stage: everything from the runtime
/// marker on is the same but for the base (`FROM`) and where the binary
/// comes from (`COPY`).
#[test]
fn both_dockerfiles_have_the_same_runtime_stage() {
    fn runtime(dockerfile: &str) -> Vec<&str> {
        let start = dockerfile
            .find("# ---- runtime ----")
            .expect("a `# ---- runtime ----` marker");
        dockerfile[start..]
            .lines()
            .filter(|l| !l.starts_with("FROM ") && !l.starts_with("COPY "))
            .collect()
    }
    assert_eq!(runtime(DOCKERFILE), runtime(DOCKERFILE_LOCAL));
    for file in [DOCKERFILE, DOCKERFILE_LOCAL] {
        let stage = &file[file.find("# ---- runtime ----").unwrap()..];
        assert!(stage.contains("COPY ") && stage.contains("/usr/local/bin/switchboard"));
        assert!(stage.contains("USER 65532:65532"), "runs as non-root");
        assert!(stage.contains("HEALTHCHECK"));
    }
}

/// Polls `probe` until it yields a value; fails the test, with the last
/// error, once `within` has passed.
async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> T {
    let deadline = Instant::now() + within;
    let mut last = String::from("none");
    loop {
        match probe().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?} (last error: {last})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The gateway that answered `info` and the brokers it routes to.
async fn info(addr: SocketAddr) -> anyhow::Result<(String, BTreeSet<String>)> {
    // A client of its own: a fresh connection, which the entry point may
    // give to either gateway.
    let reply = Http::new(addr, Some(API_KEY))
        .call("info", json!({}))
        .await?;
    anyhow::ensure!(reply.status == 200, "info: {} {}", reply.status, reply.body);
    let gateway = reply.body["gateway"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let nodes = reply.body["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((gateway, nodes))
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Waits until both gateways route to exactly `brokers`.
async fn gateways_see(gateways: &[SocketAddr], brokers: &[&str], within: Duration) {
    let want = names(brokers);
    for &gw in gateways {
        eventually(
            &format!("gateway at {gw} sees {want:?}"),
            within,
            async || {
                let (_, nodes) = info(gw).await?;
                Ok((nodes == want).then_some(()))
            },
        )
        .await;
    }
}

/// Publishes `data` on `channel`, retrying refusals (an owner that is gone,
/// a ring still moving) until one is accepted.
async fn publish(c: &mut Client, channel: &str, data: &str, within: Duration) {
    eventually(&format!("publish on {channel}"), within, async || {
        let r = c
            .request(json!({"type": "publish", "channel": channel, "data": data}))
            .await?;
        Ok((r["type"] == "response").then_some(()))
    })
    .await;
}

/// Waits for `data` on `channel`, passing `resubscribed` frames (the
/// channel moved to another broker); true if it moved.
async fn delivered(c: &mut Client, channel: &str, data: impl Into<Value>) -> bool {
    let data: Value = data.into();
    let mut moved = false;
    loop {
        let f = c
            .wait_for(|f| {
                f["channel"] == channel && (f["type"] == "message" || f["type"] == "resubscribed")
            })
            .await
            .unwrap_or_else(|e| panic!("{data} on {channel}: {e:#}"));
        if f["type"] == "resubscribed" {
            // The owner was lost or cut off: the channel went on afresh.
            assert_eq!(f["recovered"], false, "{f}");
            moved = true;
        } else if f["data"] == data {
            return moved;
        }
    }
}

/// Publications each broker accepted, as Prometheus last scraped them
/// (gateways export the counter too, at zero).
async fn publications(prom: &Prometheus) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(prom
        .query("switchboard_broker_publications_total{role=\"broker\"}")
        .await?
        .into_iter()
        .map(|s| {
            (
                s.labels.get("instance").cloned().unwrap_or_default(),
                s.value,
            )
        })
        .collect())
}

/// The commands of the README's compose example, continuation lines joined.
fn readme_compose_commands() -> Vec<String> {
    let section = README
        .find("## Run a cluster with Docker Compose")
        .expect("README has a section `## Run a cluster with Docker Compose`");
    let rest = &README[section..];
    let start = rest.find("```sh\n").expect("the section has a sh block") + 6;
    let block = &rest[start..start + rest[start..].find("```").unwrap()];
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            continue;
        }
        current.push_str(line);
        commands.push(std::mem::take(&mut current));
    }
    commands
}

/// Removes the test's image and compose file when the test ends.
struct Leftovers {
    image: String,
    file: std::path::PathBuf,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let mut rmi = std::process::Command::new("docker");
        rmi.args(["rmi", "-f", &self.image])
            .stdout(std::process::Stdio::null());
        compose::wait_bounded(rmi, Duration::from_secs(60));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_survives_a_killed_and_a_partitioned_broker() {
    let started = Instant::now();
    let root = Path::new(ROOT);
    let tool = compose::tool().await.unwrap_or_else(|e| {
        panic!("the compose test needs Docker Engine and Compose on this machine: {e:#}")
    });
    let commands = readme_compose_commands();

    // Images, as a developer without a registry builds them.
    let tag = format!("switchboard:test-{}", std::process::id());
    let build = tokio::time::timeout(
        Duration::from_secs(900),
        tokio::process::Command::new("bash")
            .arg("deploy/local-images.sh")
            .args(["--binary", BIN, "--tag", &tag])
            .current_dir(root)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("deploy/local-images.sh finishes within 15 minutes")
    .expect("bash runs");
    assert!(
        build.status.success(),
        "deploy/local-images.sh failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let images_took = started.elapsed();

    // The user's compose file, plus one thing for the test: each gateway
    // also on a loopback port of its own, so that clients can pick one.
    let scratch = root.join("target/compose-test");
    std::fs::create_dir_all(&scratch).unwrap();
    let project = format!("sbtest{}", std::process::id());
    let override_file = scratch.join(format!("{project}.override.yml"));
    // Declared before the cluster, so dropped after it is brought down.
    let _leftovers = Leftovers {
        image: tag.clone(),
        file: override_file.clone(),
    };
    std::fs::write(
        &override_file,
        "services:\n  g1:\n    ports: [\"127.0.0.1::8000\"]\n  g2:\n    ports: [\"127.0.0.1::8000\"]\n",
    )
    .unwrap();
    let env = vec![
        ("SWITCHBOARD_IMAGE".to_owned(), tag.clone()),
        // Port 0: Docker picks free host ports; `port` tells which.
        ("SWITCHBOARD_PORT".to_owned(), "127.0.0.1:0".to_owned()),
        ("PROMETHEUS_PORT".to_owned(), "127.0.0.1:0".to_owned()),
    ];
    let mut cluster = Compose::new(
        tool,
        &project,
        &[root.join("docker-compose.yml"), override_file.clone()],
        Some(&root.join("deploy/local.env")),
        env,
    );
    let up_started = Instant::now();
    cluster.up().await.expect("compose up");
    let entry = cluster.port("lb", 8000).await.unwrap();
    let g1 = cluster.port("g1", 8000).await.unwrap();
    let g2 = cluster.port("g2", 8000).await.unwrap();
    let prom_at = cluster.port("prometheus", 9090).await.unwrap();
    let prom = Prometheus::new(prom_at);
    let gateways = [g1, g2];

    // 1. The cluster forms.
    gateways_see(&gateways, &BROKERS, WAIT * 6).await;
    let up_took = up_started.elapsed();
    let mut answered = BTreeSet::new();
    eventually(
        "the entry point reaches both gateways",
        WAIT * 3,
        async || {
            answered.insert(info(entry).await?.0);
            Ok((answered.len() == 2).then_some(()))
        },
    )
    .await;
    assert_eq!(answered, names(&["g1", "g2"]));

    // 2. Clients on each gateway and through the entry point.
    let ws = |addr: SocketAddr| format!("ws://{addr}/ws");
    let mut sub_g1 = Client::connect(&ws(g1)).await.unwrap();
    let mut sub_entry = Client::connect(&ws(entry)).await.unwrap();
    let mut pub_g2 = Client::connect(&ws(g2)).await.unwrap();
    let mut pub_entry = Client::connect(&ws(entry)).await.unwrap();
    let channels: Vec<String> = (0..12).map(|i| format!("live:{i}")).collect();
    for ch in channels.iter().map(String::as_str).chain(["chat:lobby"]) {
        for sub in [&mut sub_g1, &mut sub_entry] {
            eventually(&format!("subscribe {ch}"), WAIT * 3, async || {
                let r = sub
                    .request(json!({"type": "subscribe", "channel": ch}))
                    .await?;
                Ok((r["type"] == "response").then_some(()))
            })
            .await;
        }
    }
    for ch in &channels {
        publish(&mut pub_g2, ch, "from g2", WAIT).await;
        publish(&mut pub_entry, ch, "through the entry point", WAIT).await;
        for sub in [&mut sub_g1, &mut sub_entry] {
            delivered(sub, ch, "from g2").await;
            delivered(sub, ch, "through the entry point").await;
        }
    }

    // 3. The README's example, as written, against this cluster.
    assert!(commands.iter().any(|c| c == "docker compose up -d"));
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("docker compose down"))
    );
    let mut outputs = BTreeMap::new();
    for command in &commands {
        if command.starts_with("docker compose up") || command.starts_with("docker compose down") {
            continue; // the harness does these, with the test's project
        }
        let line = command
            .replace("docker compose ", &format!("{} ", cluster.command_line()))
            .replace(DOC_ENTRY, &entry.to_string())
            .replace(DOC_PROMETHEUS, &prom_at.to_string());
        let out = tokio::time::timeout(
            WAIT * 3,
            tokio::process::Command::new("sh")
                .args(["-c", &line])
                .envs(cluster.env().iter().map(|(k, v)| (k, v)))
                .current_dir(cluster.dir())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("README command did not finish: {command}"))
        .expect("sh runs");
        assert!(
            out.status.success(),
            "README command failed: {command}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.insert(
            command.clone(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        );
    }
    let output_of = |needle: &str| {
        outputs
            .iter()
            .find(|(c, _)| c.contains(needle))
            .map(|(_, o)| o.trim().to_owned())
            .unwrap_or_else(|| panic!("the README example has no `{needle}` command"))
    };
    assert_eq!(output_of("/readyz"), "ready");
    let published: Value = serde_json::from_str(&output_of("/api/publish")).unwrap();
    assert!(published["offset"].as_u64().is_some(), "{published}");
    let data = published_data(&commands);
    for sub in [&mut sub_g1, &mut sub_entry] {
        delivered(sub, "chat:lobby", data.clone()).await;
    }
    let token = output_of("switchboard token");
    let mut alice = Client::connect(&format!("{}?token={token}", ws(entry)))
        .await
        .unwrap();
    let hello = alice.next().await.unwrap();
    assert_eq!(
        (hello["type"].as_str(), hello["user_id"].as_str()),
        (Some("authenticated"), Some("alice"))
    );
    assert!(output_of("9090").contains("success"));

    // 4. kill -9 the broker that owns the most channels.
    let owners = eventually(
        "Prometheus counts every publication",
        WAIT * 4,
        async || {
            let p = publications(&prom).await?;
            let total: f64 = p.values().sum();
            // Two per channel, plus the README's publish.
            Ok((p.len() == 3 && total >= (2 * channels.len() + 1) as f64).then_some(p))
        },
    )
    .await;
    let victim = owners
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(b, _)| b.clone())
        .unwrap();
    let victim_id = cluster.container(&victim).await.unwrap();
    docker(&["kill", &victim_id], WAIT).await.unwrap();
    let killed_at = Instant::now();
    for ch in &channels {
        publish(&mut pub_g2, ch, "after the kill", WAIT * 3).await;
    }
    let failover = killed_at.elapsed();
    let mut moved = 0;
    for ch in &channels {
        moved += usize::from(delivered(&mut sub_g1, ch, "after the kill").await);
        delivered(&mut sub_entry, ch, "after the kill").await;
    }
    assert!(moved > 0, "{victim} owned none of the channels: {owners:?}");
    let survivors: Vec<&str> = BROKERS.into_iter().filter(|b| *b != victim).collect();
    gateways_see(&gateways, &survivors, WAIT).await;

    // ... and back: its name puts its channels back on it.
    docker(&["start", &victim_id], WAIT * 3).await.unwrap();
    let restarted_at = Instant::now();
    // Well within the 30 s after which a dead identity is forgotten: the
    // restarted process must win over it, not wait it out.
    gateways_see(&gateways, &BROKERS, WAIT * 2).await;
    let rejoin = restarted_at.elapsed();
    for ch in &channels {
        publish(&mut pub_entry, ch, "after the restart", WAIT * 3).await;
        delivered(&mut sub_g1, ch, "after the restart").await;
        delivered(&mut sub_entry, ch, "after the restart").await;
    }

    // 5. Cut another channel owner off the network, then heal.
    let isolated = owners
        .iter()
        .filter(|(b, _)| **b != victim)
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(b, _)| b.clone())
        .unwrap();
    assert!(owners[&isolated] > 0.0, "{isolated} owns no channel");
    let isolated_id = cluster.container(&isolated).await.unwrap();
    let ip = cluster.ip(&isolated).await.unwrap();
    let before = publications(&prom).await.unwrap()[&isolated];
    docker(
        &["network", "disconnect", &cluster.network(), &isolated_id],
        WAIT,
    )
    .await
    .unwrap();
    let cut_at = Instant::now();
    let others: Vec<&str> = BROKERS.into_iter().filter(|b| *b != isolated).collect();
    gateways_see(&gateways, &others, WAIT * 3).await;
    let declared_down = cut_at.elapsed();
    for ch in &channels {
        publish(&mut pub_g2, ch, "during the partition", WAIT * 3).await;
        delivered(&mut sub_g1, ch, "during the partition").await;
        delivered(&mut sub_entry, ch, "during the partition").await;
    }
    docker(
        &["network", "connect", &cluster.network(), &isolated_id],
        WAIT,
    )
    .await
    .unwrap();
    let healed_at = Instant::now();
    // Gossip announces the address a member bound: the broker must come
    // back on the same one (Docker hands out the lowest free address).
    assert_eq!(
        cluster.ip(&isolated).await.unwrap(),
        ip,
        "{isolated} came back on another address"
    );
    gateways_see(&gateways, &BROKERS, WAIT * 6).await;
    let rejoined = healed_at.elapsed();
    for ch in &channels {
        publish(&mut pub_entry, ch, "after the partition", WAIT * 3).await;
        delivered(&mut sub_g1, ch, "after the partition").await;
        delivered(&mut sub_entry, ch, "after the partition").await;
    }
    eventually(
        &format!("{isolated} publishes again, as Prometheus sees it"),
        WAIT * 4,
        async || {
            let now = publications(&prom).await?;
            Ok(now
                .get(&isolated)
                .is_some_and(|n| *n > before)
                .then_some(()))
        },
    )
    .await;

    // 6. Prometheus: every node's target up, and the dashboard's metrics.
    let targets = eventually("every target up", WAIT * 6, async || {
        let targets = prom.targets().await?;
        let up: BTreeSet<String> = targets
            .iter()
            .filter(|t| t.health == "up")
            .map(|t| t.instance().to_owned())
            .collect();
        Ok((targets.len() == 5 && up.len() == 5).then_some(up))
    })
    .await;
    assert_eq!(targets, names(&["b1", "b2", "b3", "g1", "g2"]));
    let held: BTreeSet<String> = prom.metric_names().await.unwrap().into_iter().collect();
    let charted = dashboard_metrics();
    let missing: Vec<&String> = charted
        .iter()
        .filter(|m| !held.contains(*m) && !EVENT_ONLY.contains(&m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard charts metrics nobody exports: {missing:?}"
    );
    for expr in dashboard_exprs() {
        let expr = expr.replace("$__rate_interval", "1m");
        prom.query(&expr)
            .await
            .unwrap_or_else(|e| panic!("Prometheus rejects the dashboard's {expr}: {e:#}"));
    }

    let down_took = cluster.down().await.expect("compose down -v");
    println!(
        "compose test: images {images_took:.1?}, up until all brokers routed {up_took:.1?}, \
         publishing resumed on all {} channels {failover:.1?} after docker kill ({moved} moved), \
         restarted broker routed again after {rejoin:.1?}, partitioned broker declared down after \
         {declared_down:.1?} and routed again {rejoined:.1?} after reconnecting, down -v {down_took:.1?}, \
         total {:.1?}",
        channels.len(),
        started.elapsed()
    );
}

/// Metrics that exist only once their event happened (an error frame, a
/// server-side close, an overflowing stream, a retried idempotent publish).
const EVENT_ONLY: &[&str] = &[
    "switchboard_errors_total",
    "switchboard_disconnects_total",
    "switchboard_broker_stream_overflows_total",
    "switchboard_broker_idempotent_retries_total",
];

/// Every metric name the dashboard's queries use (histograms by their
/// series names).
fn dashboard_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in dashboard_exprs() {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("switchboard_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            names.insert(name);
        }
    }
    names
}

/// The PromQL of every panel.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    exprs
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `data` the README's publish example sends.
fn published_data(commands: &[String]) -> Value {
    let command = commands
        .iter()
        .find(|c| c.contains("/api/publish"))
        .expect("the README example publishes");
    let body = &command[command.find("--json '").unwrap() + 8..];
    let body: Value = serde_json::from_str(&body[..body.find('\'').unwrap()]).unwrap();
    body["data"].clone()
}
