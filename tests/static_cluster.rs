//! Scenarios against a real cluster on loopback whose gateways are given
//! the brokers' addresses (`--broker`, no gossip to find them): three
//! `switchboard node` brokers and two `switchboard gateway` processes.
//! Cross-gateway delivery and presence, a killed broker coming back, and
//! the server API across gateways.

use std::path::Path;

use serde_json::json;
use switchboard_testkit::{
    WAIT,
    certificates::ClusterCa,
    client::Client,
    cluster::scenario_config,
    http,
    process::{Process, free_port},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

struct Cluster {
    brokers: Vec<(String, u16, Process)>,
    gateways: Vec<Process>,
    config: String,
}

impl Cluster {
    async fn start(n_brokers: usize, n_gateways: usize) -> Cluster {
        let bin = Path::new(BIN);
        let mut brokers = Vec::new();
        for i in 1..=n_brokers {
            let name = format!("b{i}");
            let port = free_port().unwrap();
            let p = start_broker(bin, &name, port).await;
            brokers.push((name, port, p));
        }
        let list = brokers
            .iter()
            .map(|(n, port, _)| format!("{n}=127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        // The dev config, with client rate limits out of the way of
        // scenarios that publish in bursts.
        let path = scenario_config("cluster").unwrap();
        let mut gateways = Vec::new();
        for i in 1..=n_gateways {
            let name = format!("g{i}");
            let args = [
                "gateway",
                "--name",
                &name,
                "--listen",
                "127.0.0.1:0",
                "--broker",
                &list,
                "--config",
                &path,
            ];
            let tls = ClusterCa::shared().gateway_args(&name);
            let args: Vec<&str> = args
                .into_iter()
                .chain(tls.iter().map(String::as_str))
                .collect();
            gateways.push(Process::start(bin, &args).await.unwrap());
        }
        Cluster {
            brokers,
            gateways,
            config: path,
        }
    }

    async fn client(&self, gateway: usize) -> Client {
        Client::connect(&self.gateways[gateway].ws_url())
            .await
            .unwrap()
    }
}

async fn start_broker(bin: &Path, name: &str, port: u16) -> Process {
    let grpc = format!("127.0.0.1:{port}");
    let args = [
        "node",
        "--replication-factor",
        "1",
        "--name",
        name,
        "--grpc",
        &grpc,
        "--http",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
    ];
    let tls = ClusterCa::shared().broker_args(name);
    let args: Vec<&str> = args
        .into_iter()
        .chain(tls.iter().map(String::as_str))
        .collect();
    Process::start_announcing(bin, &args, "grpc://")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_cross_gateways_in_order_and_presence_is_cluster_wide() {
    let mut cluster = Cluster::start(3, 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    // Enough channels that every broker owns some.
    let channels: Vec<String> = (0..12).map(|i| format!("chat:{i}")).collect();
    for ch in &channels {
        a.subscribe(ch).await.unwrap();
        b.subscribe(ch).await.unwrap();
    }
    for i in 1..=30 {
        for ch in &channels {
            b.send(json!({"type": "publish", "channel": ch, "data": i}))
                .await
                .unwrap();
        }
    }
    for ch in &channels {
        for i in 1..=30u64 {
            let m = a.message(ch).await.unwrap();
            assert_eq!(
                (m["offset"].as_u64(), m["data"].as_u64()),
                (Some(i), Some(i)),
                "{ch}"
            );
        }
    }
    let stats = a
        .ok(json!({"type": "presence_stats", "channel": "chat:0"}))
        .await
        .unwrap();
    assert_eq!(stats["num_clients"], 2);
    let who = b
        .ok(json!({"type": "presence", "channel": "chat:3"}))
        .await
        .unwrap();
    assert_eq!(who["clients"].as_array().unwrap().len(), 2);
    // Every broker serves health and metrics.
    for gw in &cluster.gateways {
        assert_eq!(http::get(gw.addr, "/readyz").await.unwrap().0, 200);
    }
    // On SIGTERM a gateway's routing tasks (links, reconciler) end with its
    // connections, and its drain waits for them: it exits cleanly, with no
    // deadline passing.
    drop((a, b));
    for gw in &mut cluster.gateways {
        let status = gw.terminate().await.unwrap();
        assert!(status.success(), "{status}");
        assert!(!gw.log().contains("drain deadline"), "{}", gw.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_that_returns_resumes_delivery_and_reports_the_epoch_change() {
    let mut cluster = Cluster::start(3, 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    let channels: Vec<String> = (0..9).map(|i| format!("feed:{i}")).collect();
    let mut epochs = std::collections::HashMap::new();
    for ch in &channels {
        let sub = a.subscribe(ch).await.unwrap();
        epochs.insert(ch.clone(), sub["epoch"].as_str().unwrap().to_owned());
        b.publish(ch, json!("before")).await.unwrap();
        assert_eq!(a.message(ch).await.unwrap()["data"], "before");
    }

    // kill -9 one broker and bring it back under the same name and address.
    let (name, port, mut victim) = cluster.brokers.remove(1);
    victim.kill().await.unwrap();
    let _back = start_broker(Path::new(BIN), &name, port).await;

    // Every channel delivers again. Those the victim owned come back in a
    // new epoch, announced to the subscriber with recovered: false.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    for ch in &channels {
        loop {
            match b
                .request(json!({"type": "publish", "channel": ch, "data": "after"}))
                .await
                .unwrap()
            {
                r if r["type"] == "response" => break,
                r => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{ch} never accepted publishes again: {r}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
    let mut reset = 0;
    for ch in &channels {
        let m = a
            .wait_for(|f| {
                f["channel"] == ch.as_str()
                    && (f["type"] == "message" || f["type"] == "resubscribed")
            })
            .await
            .unwrap();
        if m["type"] == "resubscribed" {
            reset += 1;
            assert_eq!(m["recovered"], false);
            assert_ne!(
                m["epoch"].as_str().unwrap(),
                epochs[ch],
                "{ch}: a reset comes with a new epoch"
            );
            let next = a.message(ch).await.unwrap();
            assert_eq!(next["data"], "after");
            assert_eq!(next["epoch"], m["epoch"]);
        } else {
            assert_eq!(m["data"], "after", "{ch}");
            assert_eq!(
                m["epoch"].as_str().unwrap(),
                epochs[ch],
                "{ch} kept its epoch"
            );
        }
    }
    assert!(reset > 0, "the killed broker owned none of {channels:?}");
}

async fn token(user: &str, config: &str) -> String {
    let out = tokio::process::Command::new(BIN)
        .args(["token", "--user", user, "--config", config])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api_reaches_users_and_channels_across_gateways() {
    use switchboard_testkit::api::Http;
    let cluster = Cluster::start(3, 2).await;
    let config = cluster.config.clone();
    let t = token("alice", &config).await;
    let mut alice1 = Client::connect(&format!("{}?token={t}", cluster.gateways[0].ws_url()))
        .await
        .unwrap();
    let mut alice2 = Client::connect(&format!("{}?token={t}", cluster.gateways[1].ws_url()))
        .await
        .unwrap();
    for a in [&mut alice1, &mut alice2] {
        assert_eq!(a.next().await.unwrap()["type"], "authenticated");
    }
    let mut bob = cluster.client(1).await;
    bob.subscribe("news:1").await.unwrap();

    // The API on gateway 1 reaches a subscriber on gateway 2 ...
    let api = Http::new(cluster.gateways[0].addr, Some("switchboard-dev-api-key"));
    let ack = api
        .ok(
            "publish",
            json!({"channel": "news:1", "data": {"headline": "x"}}),
        )
        .await
        .unwrap();
    assert_eq!(ack["offset"], 1);
    assert_eq!(
        bob.message("news:1").await.unwrap()["data"]["headline"],
        "x"
    );
    // ... and every connection of a user, wherever it is.
    api.ok("send_to_user", json!({"user": "alice", "data": "hi"}))
        .await
        .unwrap();
    for a in [&mut alice1, &mut alice2] {
        assert_eq!(a.message("#alice").await.unwrap()["data"], "hi");
    }
    let online = api
        .ok("user_online", json!({"user": "alice"}))
        .await
        .unwrap();
    assert_eq!(online["online"], true, "{online}");
    let info = api.ok("info", json!({})).await.unwrap();
    let mut names: Vec<&str> = info["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["b1", "b2", "b3"], "{info}");
    api.ok(
        "disconnect_user",
        json!({"user": "alice", "code": 4403, "reason": "banned"}),
    )
    .await
    .unwrap();
    for a in [alice1, alice2] {
        let closed = a.closed().await.unwrap();
        assert_eq!(
            (closed.code, closed.reason.as_str()),
            (Some(4403), "banned")
        );
    }
}
