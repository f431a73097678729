//! Channels replicated on two brokers (`broker.replication_factor = 2`,
//! docs/replication.md), as real processes: three brokers with data
//! directories and two gateways. `kill -9` of a broker that owns some of
//! the channels: the next broker of each channel's failover order, which
//! stored every acknowledged publication, takes over in the same epoch at
//! the same offsets; subscribers see no `resubscribed` and no gap, and a
//! client that was away recovers with `recovered: true`. Then the killed
//! broker comes back and takes its channels back (a planned move: each
//! leader steps down and hands it its log, and it leads them replicated,
//! docs/replication.md step 4), and is killed again: its channels go on
//! in the same epoch once more, which they could not if it had served them
//! unreplicated.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_cluster::ring::Ring;
use switchboard_testkit::{
    WAIT,
    client::Client,
    cluster::{
        broker_with, counter, declared_down, gateway, scenario_config, scenario_config_with,
        seed_of, subscribe_once_routed,
    },
    http,
    process::Process,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A fresh data directory for broker `name`.
fn data_dir(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("sb-repl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.to_str().unwrap().to_owned()
}

async fn replicated_broker(name: &str, seed: Option<&str>, config: &str) -> Process {
    replicated_broker_in(name, seed, config, &data_dir(name)).await
}

/// Broker `name` with its data directory `dir` (kept across a restart).
async fn replicated_broker_in(name: &str, seed: Option<&str>, config: &str, dir: &str) -> Process {
    broker_with(
        Path::new(BIN),
        name,
        seed,
        &["--data-dir", dir, "--config", config],
    )
    .await
    .unwrap()
}

/// Publishes `data` on `ch` until it is acknowledged (a publish during the
/// takeover may be refused); returns the acknowledged offset.
async fn publish_acknowledged(c: &mut Client, ch: &str, data: &str, since: Instant) -> u64 {
    publish_counting(c, ch, data, since).await.0
}

async fn try_publish(
    c: &mut Client,
    ch: &str,
    data: &str,
    since: Instant,
) -> Result<(u64, bool), serde_json::Value> {
    let mut refused = false;
    loop {
        let r = c
            .request(json!({"type": "publish", "channel": ch, "data": data}))
            .await
            .unwrap();
        if r["type"] == "response" {
            return Ok((r["data"]["offset"].as_u64().unwrap_or_default(), refused));
        }
        refused |= r["code"] == 100;
        if since.elapsed() > WAIT * 3 {
            return Err(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_channels_go_on_in_the_same_epoch() {
    let replicated = scenario_config_with("repl-broker", |c| {
        c.replacen("[broker]\n", "[broker]\nreplication_factor = 2\n", 1)
    })
    .unwrap();
    assert!(
        std::fs::read_to_string(&replicated)
            .unwrap()
            .contains("replication_factor = 2")
    );
    let b1 = replicated_broker("b1", None, &replicated).await;
    let seed = seed_of(&b1).unwrap();
    let mut brokers = vec![
        b1,
        replicated_broker("b2", Some(&seed), &replicated).await,
        replicated_broker("b3", Some(&seed), &replicated).await,
    ];
    let config = scenario_config("repl-gw").unwrap();
    let bin = Path::new(BIN);
    let _gateways = [
        gateway(bin, "g1", &seed, &config).await.unwrap(),
        gateway(bin, "g2", &seed, &config).await.unwrap(),
    ];
    let gws: Vec<String> = _gateways.iter().map(|g| g.ws_url()).collect();

    let channels: Vec<String> = (0..12).map(|i| format!("live:{i}")).collect();
    let mut sub = Client::connect(&gws[0]).await.unwrap();
    let mut publisher = Client::connect(&gws[1]).await.unwrap();
    let mut epochs = HashMap::new();
    for ch in &channels {
        let r = subscribe_once_routed(&mut sub, ch).await.unwrap();
        epochs.insert(ch.clone(), r["epoch"].as_str().unwrap().to_owned());
    }
    let start = Instant::now();
    for ch in &channels {
        for n in 1..=3 {
            publish_acknowledged(&mut publisher, ch, &format!("before-{n}"), start).await;
            let m = sub.message(ch).await.unwrap();
            assert_eq!(
                (m["data"].as_str(), m["offset"].as_u64()),
                (Some(format!("before-{n}").as_str()), Some(n))
            );
        }
    }
    // A client that will be away during the failover, at offset 2.
    let away: Vec<(String, String)> = channels
        .iter()
        .map(|c| (c.clone(), epochs[c].clone()))
        .collect();

    // kill -9 b2.
    let killed = Instant::now();
    brokers[1].kill().await.unwrap();
    let mut resumed = Vec::new();
    for ch in &channels {
        let offset = match try_publish(&mut publisher, ch, "after", killed).await {
            Ok((offset, _)) => offset,
            Err(r) => {
                for b in &brokers {
                    eprintln!("=== broker\n{}", b.log());
                }
                panic!("{ch} never accepted a publish again: {r}");
            }
        };
        resumed.push(killed.elapsed());
        assert_eq!(
            offset, 4,
            "{ch}: the acknowledged offset after the failover"
        );
    }
    for ch in &channels {
        let f = next_on(&mut sub, ch).await;
        assert_eq!(
            f["type"], "message",
            "{ch}: subscribers were told of a reset: {f}"
        );
        assert_eq!(
            (
                f["data"].as_str(),
                f["offset"].as_u64(),
                f["epoch"].as_str()
            ),
            (Some("after"), Some(4), Some(epochs[ch].as_str())),
            "{ch}"
        );
    }
    // The client that was away comes back from offset 2: recovered.
    let mut back = Client::connect(&gws[1]).await.unwrap();
    for (ch, epoch) in &away {
        let r = back
            .request(
                json!({"type": "subscribe", "channel": ch, "since": {"offset": 2, "epoch": epoch}}),
            )
            .await
            .unwrap();
        assert_eq!(r["data"]["recovered"], true, "{ch}: {r}");
        let offsets: Vec<u64> = r["data"]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["offset"].as_u64())
            .collect();
        assert_eq!(offsets, [3, 4], "{ch}: {r}");
    }
    println!(
        "replicated failover: publishing resumed on every channel within {:?} of kill -9",
        resumed.iter().max().unwrap()
    );

    // b2 comes back with its votes (once the others declared its old self
    // down: a name is one live member's) and takes its channels back; then
    // it is killed again.
    declared_down(&brokers[0], "b2").await.unwrap();
    let dir = std::env::temp_dir().join(format!("sb-repl-b2-{}", std::process::id()));
    brokers[1] = replicated_broker_in("b2", Some(&seed), &replicated, dir.to_str().unwrap()).await;
    let ring = Ring::new(["b1", "b2", "b3"]);
    let owned = channels
        .iter()
        .filter(|c| ring.owner(c) == Some("b2"))
        .count();
    assert!(owned > 0, "b2 owns none of the channels");
    taken_back(&brokers[1], owned).await;
    let mut next: HashMap<&String, u64> = channels.iter().map(|c| (c, 5)).collect();
    for round in ["back", "again"] {
        if round == "again" {
            brokers[1].kill().await.unwrap();
        }
        let since = Instant::now();
        for ch in &channels {
            let (offset, refused) = publish_counting(&mut publisher, ch, round, since).await;
            let want = next[ch];
            // A publish without an idempotency key that was refused with
            // code 100 may have been applied all the same (docs/protocol.md);
            // then the one acknowledged comes after it. Never before it (an
            // offset given twice), and never in another epoch.
            let fits = offset == want || (refused && offset > want);
            if !fits {
                for b in &brokers {
                    eprintln!("=== broker\n{}", b.log());
                }
            }
            assert!(fits, "{ch}: acknowledged at {offset}, {want} due ({round})");
            for at in want..=offset {
                let f = next_on(&mut sub, ch).await;
                assert_eq!(
                    (f["type"].as_str(), f["offset"].as_u64()),
                    (Some("message"), Some(at)),
                    "{ch}: {f}"
                );
                assert_eq!(f["data"].as_str(), Some(round), "{ch}: {f}");
                assert_eq!(f["epoch"].as_str(), Some(epochs[ch].as_str()), "{ch}");
            }
            next.insert(ch, offset + 1);
        }
        println!(
            "{round}: every channel in its epoch at the next offset ({:?})",
            since.elapsed()
        );
    }
    drop(brokers);
}

/// [`publish_acknowledged`], and whether an attempt was refused with code
/// 100 first (it may have been applied).
async fn publish_counting(c: &mut Client, ch: &str, data: &str, since: Instant) -> (u64, bool) {
    try_publish(c, ch, data, since)
        .await
        .unwrap_or_else(|r| panic!("{ch} never accepted a publish again: {r}"))
}

/// The next message or `resubscribed` frame on `ch`.
async fn next_on(sub: &mut Client, ch: &str) -> serde_json::Value {
    sub.wait_for(|f| f["channel"] == ch && (f["type"] == "message" || f["type"] == "resubscribed"))
        .await
        .unwrap()
}

/// Waits until `broker` took `n` channels from their previous owners (its
/// hand-over counter says so).
async fn taken_back(broker: &Process, n: usize) {
    let addr = broker.announced("http://").expect("http address");
    let deadline = Instant::now() + WAIT * 2;
    loop {
        // Its HTTP listener may not be up yet: that counts as none taken.
        let metrics = http::get(addr, "/metrics").await.map(|r| r.1);
        let metrics = metrics.unwrap_or_default();
        let taken = counter(
            &metrics,
            "switchboard_broker_handoffs_total{direction=\"in\"}",
        );
        if taken as usize >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "b2 took {taken} of {n} channels back:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// R = 2 is the default (docs/operations.md), and it needs a data
/// directory: a broker given none refuses to start, and says both ways out.
/// `--replication-factor 1` starts it, each channel stored on it alone.
#[tokio::test]
async fn without_a_data_directory_the_default_replication_refuses_to_start() {
    let args = |extra: &[&str]| {
        let mut args = vec!["node", "--name", "b1", "--grpc", "127.0.0.1:0"];
        args.extend(["--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0"]);
        args.extend(extra);
        switchboard_testkit::certificates::ClusterCa::shared().secured(&args)
    };
    let refused = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(BIN)
            .args(args(&[]))
            .env(
                "SWITCHBOARD_GOSSIP_KEY",
                switchboard_testkit::gossip_key::gossip_key(),
            )
            .output(),
    )
    .await
    .expect("refuses at once")
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    for says in [
        "replication_factor is 2 (the default)",
        "--data-dir",
        "--replication-factor 1",
    ] {
        assert!(stderr.contains(says), "{says:?} not in {stderr}");
    }
    let alone = Process::start_announcing(
        Path::new(BIN),
        &args(&["--replication-factor", "1"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "grpc://",
    )
    .await;
    assert!(alone.is_ok(), "{:?}", alone.err());
}

/// A WebSocket publish carries no idempotency key, so before session 12 a
/// publish in flight when its owner was killed failed with code 100 (it
/// might have been applied). The gateway now gives it a key of its own and
/// asks the channel's next owner again: every publish of a round sent just
/// before `kill -9` is acknowledged, each at the round's offset (applied
/// twice, the offset would be one further), and subscribers get each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_publishes_in_flight_at_a_kill_are_applied_once() {
    let replicated = scenario_config_with("repl-keyless", |c| {
        c.replacen("[broker]\n", "[broker]\nreplication_factor = 2\n", 1)
    })
    .unwrap();
    let b1 = replicated_broker("k1", None, &replicated).await;
    let seed = seed_of(&b1).unwrap();
    let mut brokers = vec![
        b1,
        replicated_broker("k2", Some(&seed), &replicated).await,
        replicated_broker("k3", Some(&seed), &replicated).await,
    ];
    let config = scenario_config("repl-keyless-gw").unwrap();
    let g1 = gateway(Path::new(BIN), "g1", &seed, &config).await.unwrap();
    let channels: Vec<String> = (0..12).map(|i| format!("keyless:{i}")).collect();
    let ring = Ring::new(["k1", "k2", "k3"]);
    assert!(channels.iter().any(|c| ring.owner(c) == Some("k2")));
    let mut sub = Client::connect(&g1.ws_url()).await.unwrap();
    let mut publisher = Client::connect(&g1.ws_url()).await.unwrap();
    for ch in &channels {
        subscribe_once_routed(&mut sub, ch).await.unwrap();
        // Routed (and replicated) before the rounds: the first publish.
        let offset = publish_acknowledged(&mut publisher, ch, "0", Instant::now()).await;
        assert_eq!(offset, 1, "{ch}");
    }
    // Round 2 on every channel; then k2 is frozen and its channels alone
    // get round 3, so those publishes are surely in k2's hands when it is
    // killed; then rounds 3 (the others) to 6 on every channel.
    let owned_by_k2 = |ch: &String| ring.owner(ch) == Some("k2");
    let mut next: HashMap<&String, u64> = channels.iter().map(|c| (c, 2)).collect();
    let mut killed = None;
    for round in 2..=6u64 {
        let in_round: Vec<&String> = match round {
            3 => {
                brokers[1].freeze().unwrap();
                channels.iter().filter(|c| owned_by_k2(c)).collect()
            }
            _ => channels.iter().filter(|c| next[c] <= round).collect(),
        };
        // The whole round is sent before any reply is read: requests on
        // different channels proceed independently.
        let mut ids = Vec::new();
        for (n, ch) in in_round.into_iter().enumerate() {
            let id = 1_000 * round + n as u64;
            let frame = json!({"type": "publish", "id": id, "channel": ch, "data": round});
            publisher.send(frame).await.unwrap();
            ids.push((id, ch));
        }
        if round == 3 {
            // The gateway has read the round (it answers a ping after it).
            publisher.request(json!({"type": "ping"})).await.unwrap();
            brokers[1].kill().await.unwrap();
            killed = Some(Instant::now());
        }
        for (id, ch) in ids {
            let r = publisher.wait_for(|f| f["id"] == id).await.unwrap();
            if r["type"] != "response" || r["data"]["offset"] != next[ch] {
                for p in brokers.iter().chain([&g1]) {
                    eprintln!("=== process\n{}", p.log());
                }
            }
            assert_eq!(r["type"], "response", "{ch}, round {round}: {r}");
            assert_eq!(r["data"]["offset"], next[ch], "{ch}, round {round}: {r}");
            next.insert(ch, next[ch] + 1);
        }
    }
    println!(
        "keyless publishes: every one acknowledged once, the last {:?} after the kill",
        killed.unwrap().elapsed()
    );
    for ch in &channels {
        for offset in 1..next[ch] {
            let f = sub
                .wait_for(|f| {
                    f["channel"] == ch.as_str()
                        && (f["type"] == "message" || f["type"] == "resubscribed")
                })
                .await
                .unwrap_or_else(|e| {
                    for p in brokers.iter().chain([&g1]) {
                        eprintln!("=== process\n{}", p.log());
                    }
                    panic!("{ch}: offset {offset} never delivered: {e}")
                });
            assert_eq!(
                (f["type"].as_str(), f["offset"].as_u64()),
                (Some("message"), Some(offset)),
                "{ch}: {f}"
            );
        }
    }
    drop(brokers);
}
