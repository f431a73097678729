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
//!    resumes on every channel, and, since the cluster stores every
//!    channel on two brokers, in the same epoch: subscribers get every
//!    acknowledged publication at the offset it was acknowledged at, with
//!    no `resubscribed` (docs/replication.md); `docker start` brings it
//!    back into the ring;
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
/// a ring still moving) until one is accepted; returns the acknowledgement
/// (`offset`, `epoch`).
async fn publish(c: &mut Client, channel: &str, data: &str, within: Duration) -> Value {
    eventually(&format!("publish on {channel}"), within, async || {
        let r = c
            .request(json!({"type": "publish", "channel": channel, "data": data}))
            .await?;
        Ok((r["type"] == "response").then(|| r["data"].clone()))
    })
    .await
}

/// The next message or `resubscribed` frame on `channel` (waiting for
/// `data`, which the failure names).
async fn next_on(c: &mut Client, channel: &str, data: impl std::fmt::Display) -> Value {
    c.wait_for(|f| {
        f["channel"] == channel && (f["type"] == "message" || f["type"] == "resubscribed")
    })
    .await
    .unwrap_or_else(|e| panic!("{data} on {channel}: {e:#}"))
}

/// Waits for `data` on `channel` and asserts that it arrived as it was
/// acknowledged (`ack`: its offset, its epoch), with no `resubscribed`
/// before it: the channel went on in its epoch.
async fn delivered_as_acked(c: &mut Client, channel: &str, data: &str, ack: &Value) {
    loop {
        let f = next_on(c, channel, data).await;
        assert_eq!(f["type"], "message", "an epoch change on {channel}: {f}");
        if f["data"] == data {
            assert_eq!(
                (&f["offset"], &f["epoch"]),
                (&ack["offset"], &ack["epoch"]),
                "{data} on {channel} arrived elsewhere than acknowledged"
            );
            return;
        }
    }
}

/// Waits for `data` on `channel`, passing `resubscribed` frames (the
/// channel moved to another broker in a new epoch).
async fn delivered(c: &mut Client, channel: &str, data: impl Into<Value>) {
    let data: Value = data.into();
    loop {
        let f = next_on(c, channel, &data).await;
        if f["type"] == "resubscribed" {
            // The owner was lost or cut off: the channel went on afresh.
            assert_eq!(f["recovered"], false, "{f}");
        } else if f["data"] == data {
            return;
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
    let tool = compose::tool().await.unwrap_or_else(|e| {
        panic!("the compose test needs Docker Engine and Compose on this machine: {e:#}")
    });
    let commands = readme_compose_commands();
    let tag = format!("switchboard:test-{}", std::process::id());
    build_images(&tag).await;
    let images_took = started.elapsed();
    let mut cluster = Cluster::up(tool, &tag).await;

    // 1. The cluster forms.
    let up_took = cluster_forms(&cluster).await;

    // 1b. A container on the cluster's network without its credentials (a
    // gateway started --insecure, dialing the brokers directly) cannot
    // publish through any broker: their TLS refuses it.
    outsider_cannot_publish(&cluster).await;

    // 2. Clients on each gateway and through the entry point.
    let channels: Vec<String> = (0..12).map(|i| format!("live:{i}")).collect();
    let mut clients = Clients::connect(&cluster).await;
    let epochs = clients_talk_across_gateways(&mut clients, &channels).await;

    // 3. The README's example, as written, against this cluster.
    readme_example_works(&cluster, &mut clients, &commands).await;

    // 4. kill -9 the broker that owns the most channels, and back.
    let owners = publications_counted(&cluster.prom, &channels).await;
    let killed = kill_the_busiest_broker(&cluster, &mut clients, &epochs, &owners).await;
    let rejoin = restart_broker(&cluster, &mut clients, &channels, &killed).await;
    let failover = killed.failover;
    // 4b. Its channels' replica sets take it in again (docs/operations.md,
    // `switchboard_replication_degraded_channels`): until then a second
    // fault is two faults, not one.
    replica_sets_refilled(&cluster).await;

    // 5. Cut another channel owner off the network, then heal.
    let (declared_down, rejoined) =
        partition_and_heal(&cluster, &mut clients, &channels, &owners, &killed.name).await;

    // 6. Prometheus: every node's target up, and the dashboard's metrics.
    prometheus_holds_the_dashboards_metrics(&cluster.prom).await;

    let down_took = cluster.compose.down().await.expect("compose down -v");
    println!(
        "compose test: images {images_took:.1?}, up until all brokers routed {up_took:.1?}, \
         publishing resumed on all {} channels {failover:.1?} after docker kill, in their epochs, \
         restarted broker routed again after {rejoin:.1?}, partitioned broker declared down after \
         {declared_down:.1?} and routed again {rejoined:.1?} after reconnecting, down -v {down_took:.1?}, \
         total {:.1?}",
        channels.len(),
        started.elapsed()
    );
}

/// Builds the images, as a developer without a registry does.
async fn build_images(tag: &str) {
    let build = tokio::time::timeout(
        Duration::from_secs(900),
        tokio::process::Command::new("bash")
            .arg("deploy/local-images.sh")
            .args(["--binary", BIN, "--tag", tag])
            .current_dir(ROOT)
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
}

/// The running cluster and where the test reaches it.
struct Cluster {
    /// Declared before `_leftovers`, so brought down before they go.
    compose: Compose,
    /// The HAProxy entry point.
    entry: SocketAddr,
    g1: SocketAddr,
    g2: SocketAddr,
    prom_at: SocketAddr,
    /// A gateway on the cluster's network without its credentials.
    outsider: SocketAddr,
    prom: Prometheus,
    /// When `compose up` started.
    up_started: Instant,
    _leftovers: Leftovers,
}

impl Cluster {
    /// The user's compose file, plus one thing for the test: each gateway
    /// also on a loopback port of its own, so that clients can pick one.
    async fn up(tool: Vec<String>, tag: &str) -> Cluster {
        let root = Path::new(ROOT);
        let scratch = root.join("target/compose-test");
        std::fs::create_dir_all(&scratch).unwrap();
        let project = format!("sbtest{}", std::process::id());
        let override_file = scratch.join(format!("{project}.override.yml"));
        let leftovers = Leftovers {
            image: tag.to_owned(),
            file: override_file.clone(),
        };
        std::fs::write(&override_file, override_yaml(tag)).unwrap();
        let env = vec![
            ("SWITCHBOARD_IMAGE".to_owned(), tag.to_owned()),
            // Port 0: Docker picks free host ports; `port` tells which.
            ("SWITCHBOARD_PORT".to_owned(), "127.0.0.1:0".to_owned()),
            ("PROMETHEUS_PORT".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        let compose = Compose::new(
            tool,
            &project,
            &[root.join("docker-compose.yml"), override_file],
            Some(&root.join("deploy/local.env")),
            env,
        );
        let up_started = Instant::now();
        compose.up().await.expect("compose up");
        let entry = compose.port("lb", 8000).await.unwrap();
        let g1 = compose.port("g1", 8000).await.unwrap();
        let g2 = compose.port("g2", 8000).await.unwrap();
        let prom_at = compose.port("prometheus", 9090).await.unwrap();
        let outsider = compose.port("outsider", 8000).await.unwrap();
        Cluster {
            compose,
            entry,
            g1,
            g2,
            prom_at,
            outsider,
            prom: Prometheus::new(prom_at),
            up_started,
            _leftovers: leftovers,
        }
    }

    fn gateways(&self) -> [SocketAddr; 2] {
        [self.g1, self.g2]
    }
}

/// The user's file plus, for the test: each gateway also on a loopback
/// port of its own, and an outsider: the stock image on the cluster's
/// network, a gateway with no credentials (`--insecure`) pointed straight
/// at the brokers' gRPC ports.
fn override_yaml(tag: &str) -> String {
    format!(
        r#"services:
  g1:
    ports: ["127.0.0.1::8000"]
  g2:
    ports: ["127.0.0.1::8000"]
  outsider:
    image: {tag}
    restart: "no"
    command: ["gateway", "--name", "outsider", "--insecure", "--listen", "0.0.0.0:8000",
              "--broker", "b1=b1:7000,b2=b2:7000,b3=b3:7000"]
    ports: ["127.0.0.1::8000"]
    depends_on: [b1, b2, b3]
"#
    )
}

/// Publishing through the outsider fails on every channel, and the brokers
/// count the TLS handshakes they refused.
async fn outsider_cannot_publish(cluster: &Cluster) {
    let mut outsider = Client::connect(&ws(cluster.outsider)).await.unwrap();
    for i in 0..12 {
        let channel = format!("live:{i}");
        let reply = outsider
            .request(json!({"type": "publish", "channel": channel, "data": "intruder"}))
            .await
            .unwrap();
        assert_eq!(
            reply["type"], "error",
            "the outsider published to {channel}: {reply}"
        );
    }
    eventually(
        "the brokers report refused TLS handshakes",
        WAIT * 3,
        async || {
            let refused = cluster
                .prom
                .query("sum(switchboard_tls_handshakes_refused_total)")
                .await?;
            Ok(refused.first().filter(|s| s.value > 0.0).map(|_| ()))
        },
    )
    .await;
}

fn ws(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// Each gateway reports all three brokers, and the entry point spreads new
/// connections over both gateways. Returns how long after `compose up` all
/// brokers were routed.
async fn cluster_forms(cluster: &Cluster) -> Duration {
    gateways_see(&cluster.gateways(), &BROKERS, WAIT * 6).await;
    let up_took = cluster.up_started.elapsed();
    let mut answered = BTreeSet::new();
    eventually(
        "the entry point reaches both gateways",
        WAIT * 3,
        async || {
            answered.insert(info(cluster.entry).await?.0);
            Ok((answered.len() == 2).then_some(()))
        },
    )
    .await;
    assert_eq!(answered, names(&["g1", "g2"]));
    up_took
}

/// Subscribers on g1 and through the entry point; publishers on g2 and
/// through the entry point.
struct Clients {
    sub_g1: Client,
    sub_entry: Client,
    pub_g2: Client,
    pub_entry: Client,
}

impl Clients {
    async fn connect(cluster: &Cluster) -> Clients {
        Clients {
            sub_g1: Client::connect(&ws(cluster.g1)).await.unwrap(),
            sub_entry: Client::connect(&ws(cluster.entry)).await.unwrap(),
            pub_g2: Client::connect(&ws(cluster.g2)).await.unwrap(),
            pub_entry: Client::connect(&ws(cluster.entry)).await.unwrap(),
        }
    }

    fn subscribers(&mut self) -> [&mut Client; 2] {
        [&mut self.sub_g1, &mut self.sub_entry]
    }

    /// Both subscribers get `data` on `channel`.
    async fn both_get(&mut self, channel: &str, data: &str) {
        delivered(&mut self.sub_g1, channel, data).await;
        delivered(&mut self.sub_entry, channel, data).await;
    }
}

/// Both subscribers subscribe to every channel and `chat:lobby`, and get
/// what is published on g2 and through the entry point. Returns each
/// channel's epoch.
async fn clients_talk_across_gateways(
    clients: &mut Clients,
    channels: &[String],
) -> BTreeMap<String, Value> {
    for ch in channels.iter().map(String::as_str).chain(["chat:lobby"]) {
        for sub in clients.subscribers() {
            eventually(&format!("subscribe {ch}"), WAIT * 3, async || {
                let r = sub
                    .request(json!({"type": "subscribe", "channel": ch}))
                    .await?;
                Ok((r["type"] == "response").then_some(()))
            })
            .await;
        }
    }
    let mut epochs = BTreeMap::new();
    for ch in channels {
        publish(&mut clients.pub_g2, ch, "from g2", WAIT).await;
        let ack = publish(&mut clients.pub_entry, ch, "through the entry point", WAIT).await;
        for sub in clients.subscribers() {
            delivered(sub, ch, "from g2").await;
            delivered(sub, ch, "through the entry point").await;
        }
        epochs.insert(ch.clone(), ack["epoch"].clone());
    }
    epochs
}

/// Runs the README's example commands (but `up` and `down`, which the
/// harness does with the test's project) against the cluster; returns each
/// command's output.
async fn run_readme_commands(cluster: &Cluster, commands: &[String]) -> BTreeMap<String, String> {
    assert!(commands.iter().any(|c| c == "docker compose up -d"));
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("docker compose down"))
    );
    let compose = &cluster.compose;
    let mut outputs = BTreeMap::new();
    for command in commands {
        if command.starts_with("docker compose up") || command.starts_with("docker compose down") {
            continue; // the harness does these, with the test's project
        }
        let line = command
            .replace("docker compose ", &format!("{} ", compose.command_line()))
            .replace(DOC_ENTRY, &cluster.entry.to_string())
            .replace(DOC_PROMETHEUS, &cluster.prom_at.to_string());
        let out = tokio::time::timeout(
            WAIT * 3,
            tokio::process::Command::new("sh")
                .args(["-c", &line])
                .envs(compose.env().iter().map(|(k, v)| (k, v)))
                .current_dir(compose.dir())
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
    outputs
}

/// The README's example does what it says: the cluster is ready, its
/// publication reaches the subscribers, its token authenticates, and its
/// Prometheus query succeeds.
async fn readme_example_works(cluster: &Cluster, clients: &mut Clients, commands: &[String]) {
    let outputs = run_readme_commands(cluster, commands).await;
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
    let data = published_data(commands);
    for sub in clients.subscribers() {
        delivered(sub, "chat:lobby", data.clone()).await;
    }
    let token = output_of("switchboard token");
    let mut alice = Client::connect(&format!("{}?token={token}", ws(cluster.entry)))
        .await
        .unwrap();
    let hello = alice.next().await.unwrap();
    assert_eq!(
        (hello["type"].as_str(), hello["user_id"].as_str()),
        (Some("authenticated"), Some("alice"))
    );
    assert!(output_of("9090").contains("success"));
}

/// Waits until Prometheus has counted every publication so far (two per
/// channel, plus the README's); returns them per broker.
async fn publications_counted(prom: &Prometheus, channels: &[String]) -> BTreeMap<String, f64> {
    eventually(
        "Prometheus counts every publication",
        WAIT * 4,
        async || {
            let p = publications(prom).await?;
            let total: f64 = p.values().sum();
            // Two per channel, plus the README's publish.
            Ok((p.len() == 3 && total >= (2 * channels.len() + 1) as f64).then_some(p))
        },
    )
    .await
}

/// The broker that `docker kill` stopped.
struct Killed {
    name: String,
    container: String,
    /// How long after the kill publishing resumed on every channel.
    failover: Duration,
}

/// `docker kill` of the broker that owns the most channels: publishing
/// resumes on every channel, in the channel's epoch, and both subscribers
/// get each publication at the offset it was acknowledged at, with no
/// `resubscribed` (the cluster runs `replication_factor` 2).
async fn kill_the_busiest_broker(
    cluster: &Cluster,
    clients: &mut Clients,
    epochs: &BTreeMap<String, Value>,
    owners: &BTreeMap<String, f64>,
) -> Killed {
    let victim = owners
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(b, _)| b.clone())
        .unwrap();
    assert!(
        owners[&victim] > 0.0,
        "{victim} owns no channel: {owners:?}"
    );
    let victim_id = cluster.compose.container(&victim).await.unwrap();
    docker(&["kill", &victim_id], WAIT).await.unwrap();
    let killed_at = Instant::now();
    let mut acks = BTreeMap::new();
    for ch in epochs.keys() {
        acks.insert(
            ch,
            publish(&mut clients.pub_g2, ch, "after the kill", WAIT * 3).await,
        );
    }
    let failover = killed_at.elapsed();
    for (ch, ack) in acks {
        assert_eq!(ack["epoch"], epochs[ch], "{ch} went on in a new epoch");
        for sub in clients.subscribers() {
            delivered_as_acked(sub, ch, "after the kill", &ack).await;
        }
    }
    let survivors: Vec<&str> = BROKERS.into_iter().filter(|b| *b != victim).collect();
    gateways_see(&cluster.gateways(), &survivors, WAIT).await;
    Killed {
        name: victim,
        container: victim_id,
        failover,
    }
}

/// `docker start` of the killed broker: its name puts its channels back on
/// it. Returns how long until both gateways routed to it again.
async fn restart_broker(
    cluster: &Cluster,
    clients: &mut Clients,
    channels: &[String],
    killed: &Killed,
) -> Duration {
    docker(&["start", &killed.container], WAIT * 3)
        .await
        .unwrap();
    let restarted_at = Instant::now();
    // Well within the 30 s after which a dead identity is forgotten: the
    // restarted process must win over it, not wait it out.
    gateways_see(&cluster.gateways(), &BROKERS, WAIT * 2).await;
    let rejoin = restarted_at.elapsed();
    for ch in channels {
        publish(&mut clients.pub_entry, ch, "after the restart", WAIT * 3).await;
        clients.both_get(ch, "after the restart").await;
    }
    rejoin
}

/// Every broker leads its channels with the replica sets the ring allows
/// (`switchboard_replication_degraded_channels` at 0 on each, read from
/// its own `/metrics`, not from Prometheus's last scrape).
async fn replica_sets_refilled(cluster: &Cluster) {
    let compose = &cluster.compose;
    eventually("every replica set refilled", WAIT * 8, async || {
        for broker in BROKERS {
            let addr: std::net::SocketAddr =
                format!("{}:9000", compose.ip(broker).await?).parse()?;
            let (_, metrics) = switchboard_testkit::http::get(addr, "/metrics").await?;
            let degraded = metrics
                .lines()
                .find_map(|l| l.strip_prefix("switchboard_replication_degraded_channels"))
                .and_then(|rest| rest.split_whitespace().last()?.parse::<f64>().ok());
            if degraded != Some(0.0) {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await;
}

/// `docker network disconnect` of the busiest owner but `victim`: the
/// others declare it down and its channels move; `docker network connect`:
/// it rejoins on its old address, serves its channels again, and
/// Prometheus sees it publish. Returns how long until it was declared
/// down, and until it was routed again after reconnecting.
async fn partition_and_heal(
    cluster: &Cluster,
    clients: &mut Clients,
    channels: &[String],
    owners: &BTreeMap<String, f64>,
    victim: &str,
) -> (Duration, Duration) {
    let isolated = owners
        .iter()
        .filter(|(b, _)| **b != victim)
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(b, _)| b.clone())
        .unwrap();
    assert!(owners[&isolated] > 0.0, "{isolated} owns no channel");
    let compose = &cluster.compose;
    let isolated_id = compose.container(&isolated).await.unwrap();
    let ip = compose.ip(&isolated).await.unwrap();
    let before = publications(&cluster.prom).await.unwrap()[&isolated];
    docker(
        &["network", "disconnect", &compose.network(), &isolated_id],
        WAIT,
    )
    .await
    .unwrap();
    let cut_at = Instant::now();
    let others: Vec<&str> = BROKERS.into_iter().filter(|b| *b != isolated).collect();
    gateways_see(&cluster.gateways(), &others, WAIT * 3).await;
    let declared_down = cut_at.elapsed();
    for ch in channels {
        publish(&mut clients.pub_g2, ch, "during the partition", WAIT * 3).await;
        clients.both_get(ch, "during the partition").await;
    }
    docker(
        &["network", "connect", &compose.network(), &isolated_id],
        WAIT,
    )
    .await
    .unwrap();
    let healed_at = Instant::now();
    // Gossip announces the address a member bound: the broker must come
    // back on the same one (Docker hands out the lowest free address).
    assert_eq!(
        compose.ip(&isolated).await.unwrap(),
        ip,
        "{isolated} came back on another address"
    );
    gateways_see(&cluster.gateways(), &BROKERS, WAIT * 6).await;
    let rejoined = healed_at.elapsed();
    for ch in channels {
        publish(&mut clients.pub_entry, ch, "after the partition", WAIT * 3).await;
        clients.both_get(ch, "after the partition").await;
    }
    publishes_again(&cluster.prom, &isolated, before).await;
    (declared_down, rejoined)
}

/// Waits until Prometheus sees `broker` accept more publications than `before`.
async fn publishes_again(prom: &Prometheus, broker: &str, before: f64) {
    eventually(
        &format!("{broker} publishes again, as Prometheus sees it"),
        WAIT * 4,
        async || {
            let now = publications(prom).await?;
            Ok(now.get(broker).is_some_and(|n| *n > before).then_some(()))
        },
    )
    .await;
}

/// Every node's target is up, every metric the dashboard charts is held
/// (but those that exist only once their event happened), and Prometheus
/// accepts every query of the dashboard.
async fn prometheus_holds_the_dashboards_metrics(prom: &Prometheus) {
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
