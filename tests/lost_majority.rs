//! `broker.lost_majority = "refuse"`, the default (docs/replication.md "A
//! lost majority"), as real processes: three brokers with R = 2 and a gateway.
//! Two brokers are killed with `kill -9`; the one left sees what a broker
//! cut off by a partition sees (every peer gone), and once it has
//! declared them down it refuses every channel: nothing is acknowledged
//! that a majority did not store, and nothing starts in a new epoch.
//! (With the default, `serve`, it serves them unreplicated, from its own
//! replica or in a new epoch: `both_replicas_of_a_replicated_channel_killed`
//! in tests/fault_scenarios.rs.) When the two come back, every channel
//! takes publications again; a channel the survivor held a complete
//! replica of goes on in its epoch at the next offset, and a channel both
//! of whose data replicas died starts a new epoch, announced.

use std::{collections::HashMap, path::Path};

use serde_json::json;
use switchboard_cluster::ring::Ring;
use switchboard_testkit::{
    client::Client,
    cluster::{
        broker_at, broker_with, counter, declared_down, gateway, publish_acknowledged,
        scenario_config, seed_of, subscribe_once_routed,
    },
    http,
    process::{Process, free_port},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn data_dir(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("sb-lost-{name}-{}", std::process::id()));
    dir.to_str().unwrap().to_owned()
}

async fn broker(name: &str, seed: Option<&str>, config: &str) -> Process {
    let dir = data_dir(name);
    broker_with(
        Path::new(BIN),
        name,
        seed,
        &["--data-dir", &dir, "--config", config],
    )
    .await
    .unwrap()
}

/// Publishes on `ch` until acknowledged; returns the offset.
async fn acknowledged(c: &mut Client, ch: &str, data: &str) -> u64 {
    let reply = publish_acknowledged(c, ch, data).await.unwrap();
    reply["offset"].as_u64().unwrap()
}

/// `broker`'s count of requests refused for a lost majority.
async fn refused_by(broker: &Process) -> f64 {
    let addr = broker.announced("http://").expect("http address");
    let metrics = http::get(addr, "/metrics").await.unwrap().1;
    counter(&metrics, "switchboard_replication_refused_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_left_alone_acknowledges_nothing_until_a_majority_is_back() {
    // The default: `lost_majority` unset is "refuse".
    let refuse = scenario_config("lost-default").unwrap();
    assert!(
        !std::fs::read_to_string(&refuse)
            .unwrap()
            .contains("lost_majority")
    );
    for name in ["b1", "b2", "b3"] {
        let _ = std::fs::remove_dir_all(data_dir(name));
    }
    let b1 = broker("b1", None, &refuse).await;
    let seed = seed_of(&b1).unwrap();
    let mut brokers = [
        b1,
        broker("b2", Some(&seed), &refuse).await,
        broker("b3", Some(&seed), &refuse).await,
    ];
    let g = gateway(
        Path::new(BIN),
        "g1",
        &seed,
        &scenario_config("lost-gw").unwrap(),
    )
    .await
    .unwrap();

    let channels: Vec<String> = (0..9).map(|i| format!("lost:{i}")).collect();
    let mut sub = Client::connect(&g.ws_url()).await.unwrap();
    let mut publisher = Client::connect(&g.ws_url()).await.unwrap();
    let mut epochs = HashMap::new();
    for ch in &channels {
        let reply = subscribe_once_routed(&mut sub, ch).await.unwrap();
        epochs.insert(ch.clone(), reply["epoch"].as_str().unwrap().to_owned());
        for n in 1..=2 {
            assert_eq!(acknowledged(&mut publisher, ch, "before").await, n);
            assert_eq!(sub.message(ch).await.unwrap()["offset"], n);
        }
    }

    // b2 and b3 killed: b1 is left with every channel's majority gone.
    brokers[1].kill().await.unwrap();
    brokers[2].kill().await.unwrap();
    declared_down(&brokers[0], "b2").await.unwrap();
    declared_down(&brokers[0], "b3").await.unwrap();
    // One publish per channel, side by side: each is refused (the gateway
    // retries for its 3 s, then answers code 100), none acknowledged.
    let mut refusals = tokio::task::JoinSet::new();
    for ch in channels.clone() {
        let url = g.ws_url();
        refusals.spawn(async move {
            let mut c = Client::connect(&url).await.unwrap();
            let r = c
                .request(json!({"type": "publish", "channel": ch, "data": "alone"}))
                .await
                .unwrap();
            (ch, r)
        });
    }
    for (ch, r) in refusals.join_all().await {
        assert_eq!(
            r["type"], "error",
            "{ch}: acknowledged without a majority: {r}"
        );
        assert_eq!(r["code"], 100, "{ch}: {r}");
    }
    assert!(refused_by(&brokers[0]).await > 0.0);

    // b2 and b3 come back (their votes on disk, their logs gone).
    for (i, name) in [(1, "b2"), (2, "b3")] {
        brokers[i] = broker(name, Some(&seed), &refuse).await;
    }
    let ring = Ring::new(["b1", "b2", "b3"]);
    let mut same_epoch = 0;
    for ch in &channels {
        let offset = acknowledged(&mut publisher, ch, "back").await;
        let frame = sub
            .wait_for(|f| {
                f["channel"] == ch.as_str()
                    && (f["type"] == "message" || f["type"] == "resubscribed")
            })
            .await
            .unwrap();
        // b1 a data replica (the order's first two): every acknowledged
        // publication held here, so nothing may be announced lost.
        let held = ring.failover(ch).take(2).any(|b| b == "b1");
        let went_on = frame["type"] == "message" && frame["offset"] == 3;
        if held && !went_on {
            // Every line but other channels' refusals: the gossip and
            // elections around this channel's are the story (a CI run of
            // session 15 saw b3 refuse lost:7 for 5 s, then start it anew,
            // with too little logged to tell why).
            for (b, name) in brokers.iter().zip(["b1", "b2", "b3"]) {
                let log = b.log();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(ch.as_str()) || !l.contains("channel=lost:"))
                    .collect();
                eprintln!("=== {name} on {ch}\n{}", lines.join("\n"));
            }
        }
        if held {
            assert_eq!(
                (frame["type"].as_str(), frame["offset"].as_u64()),
                (Some("message"), Some(3)),
                "{ch}: {frame}"
            );
            assert_eq!(frame["epoch"].as_str(), Some(epochs[ch].as_str()), "{ch}");
            assert_eq!(offset, 3, "{ch}");
            same_epoch += 1;
        } else if frame["type"] == "message" {
            // Both data replicas died: a new epoch is due, and announced.
            assert_eq!(
                frame["epoch"].as_str(),
                Some(epochs[ch].as_str()),
                "{ch}: {frame}"
            );
            assert_eq!(frame["offset"], 3, "{ch}: {frame}");
        }
    }
    assert!(same_epoch > 0, "b1 held a replica of none of the channels");
    let stood = brokers[0].log().matches("leader lost: standing").count();
    let handed_back: usize = brokers
        .iter()
        .map(|b| b.log().matches("replica handed to its leader").count())
        .sum();
    println!(
        "{same_epoch} of {} channels went on in their epoch ({stood} stood for by b1 at the kill, {handed_back} replicas handed back to a leader that lost its copy)",
        channels.len()
    );
}

/// How many times `by` saw broker `name` come up.
fn ups(by: &Process, name: &str) -> usize {
    let member = format!("member={name}(");
    by.log()
        .lines()
        .filter(|l| l.contains("member up") && l.contains(&member))
        .count()
}

/// A publish on `ch` through gateway `g`, as one request (no retries of
/// the test's own).
async fn publish_once(g: &Process, ch: &str) -> serde_json::Value {
    let mut c = Client::connect(&g.ws_url()).await.unwrap();
    c.request(json!({"type": "publish", "channel": ch, "data": "alone"}))
        .await
        .unwrap()
}

/// The brokers seen are kept in the data directory: a broker restarted
/// while every other broker it had seen is unreachable (killed here; cut
/// off by a partition looks the same from inside) is not a cluster of one.
/// It refuses a channel it holds no register for, which may be one whose
/// voters went on without it, instead of taking it for new. (Counted only
/// since the process started, it took such a channel at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_alone_remembers_the_brokers_it_had_seen() {
    let refuse = scenario_config("lost-restart").unwrap();
    let names = ["r1", "r2", "r3"];
    for name in names {
        let _ = std::fs::remove_dir_all(data_dir(name));
    }
    // r1 gossips at a fixed address, everyone's seed: restarted there, the
    // gateway finds it again.
    let seed = format!("127.0.0.1:{}", free_port().unwrap());
    let start = |name: &'static str| {
        let (dir, config, seed) = (data_dir(name), refuse.clone(), seed.clone());
        async move {
            let extra = ["--data-dir", dir.as_str(), "--config", config.as_str()];
            let (gossip, seed) = match name {
                "r1" => (seed.as_str(), None),
                _ => ("127.0.0.1:0", Some(seed.as_str())),
            };
            broker_at(Path::new(BIN), (name, gossip), seed, &extra)
                .await
                .unwrap()
        }
    };
    let mut brokers = vec![start("r1").await, start("r2").await, start("r3").await];
    let gw = scenario_config("lost-restart-gw").unwrap();
    let g = gateway(Path::new(BIN), "g1", &seed, &gw).await.unwrap();
    let mut publisher = Client::connect(&g.ws_url()).await.unwrap();
    for n in 0..3 {
        let ch = format!("known:{n}");
        assert_eq!(acknowledged(&mut publisher, &ch, "before").await, 1);
    }

    // All three killed; r1 back alone, at its address, with its data
    // directory (its votes and the brokers it had seen).
    for b in &mut brokers {
        b.kill().await.unwrap();
    }
    for name in names {
        declared_down(&g, name).await.unwrap();
    }
    let r1 = start("r1").await;
    let deadline = tokio::time::Instant::now() + switchboard_testkit::WAIT;
    while ups(&g, "r1") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never found r1 again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A channel r1 never heard of: refused by r1 itself (its count of
    // refusals says the gateway reached it), nothing acknowledged.
    let r = publish_once(&g, "fresh:1").await;
    assert_eq!(r["type"], "error", "taken for new by a broker alone: {r}");
    assert_eq!(r["code"], 100, "{r}");
    assert!(refused_by(&r1).await > 0.0, "r1 was never asked");
    // And a channel it voted for, as before.
    let r = publish_once(&g, "known:0").await;
    assert_eq!(r["code"], 100, "{r}");

    // r2 and r3 back: a majority of the brokers seen, and the new channel
    // takes publications.
    let _brokers = [r1, start("r2").await, start("r3").await];
    assert_eq!(acknowledged(&mut publisher, "fresh:1", "back").await, 1);
}

/// Seven brokers; a channel's three voters (the first three of its
/// failover order) killed. The four left are a majority of the brokers
/// seen, but none of them holds a register for the channel: its owner on
/// their ring asks the channel's first voters, as every broker seen names
/// them, and refuses it while no majority of them is reachable, rather
/// than taking it for new (from inside, the three may as well be cut off
/// and going on with it). Until session 14 it started the channel anew at
/// once, in a new epoch. When the three come back (their logs lost with
/// the processes), the channel takes publications again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_voters_are_all_lost_waits_for_them() {
    let refuse = scenario_config("lost-seven").unwrap();
    let names: Vec<String> = (1..=7).map(|i| format!("c{i}")).collect();
    for name in &names {
        let _ = std::fs::remove_dir_all(data_dir(name));
    }
    let ring = Ring::new(names.iter().map(String::as_str));
    // A channel whose voters do not include c1, everyone's seed.
    let ch = (0..)
        .map(|i| format!("seven:{i}"))
        .find(|c| ring.failover(c).take(3).all(|b| b != "c1"))
        .unwrap();
    let order: Vec<String> = ring.failover(&ch).map(str::to_owned).collect();
    let c1 = broker("c1", None, &refuse).await;
    let seed = seed_of(&c1).unwrap();
    let mut brokers = HashMap::from([("c1".to_owned(), c1)]);
    for name in &names[1..] {
        brokers.insert(name.clone(), broker(name, Some(&seed), &refuse).await);
    }
    let gw = scenario_config("lost-seven-gw").unwrap();
    let g = gateway(Path::new(BIN), "g1", &seed, &gw).await.unwrap();
    let mut publisher = Client::connect(&g.ws_url()).await.unwrap();
    for n in 1..=2 {
        assert_eq!(acknowledged(&mut publisher, &ch, "before").await, n);
    }

    let (voters, rest) = order.split_at(3);
    for v in voters {
        brokers.get_mut(v).unwrap().kill().await.unwrap();
    }
    let owner = &brokers[&rest[0]];
    for v in voters {
        declared_down(owner, v).await.unwrap();
        declared_down(&g, v).await.unwrap();
    }
    let r = publish_once(&g, &ch).await;
    assert_eq!(
        r["type"], "error",
        "{ch} taken for new without its voters: {r}"
    );
    assert_eq!(r["code"], 100, "{r}");
    assert!(refused_by(owner).await > 0.0, "{} was never asked", rest[0]);

    for v in voters {
        brokers.insert(v.clone(), broker(v, Some(&seed), &refuse).await);
    }
    publish_acknowledged(&mut publisher, &ch, "back")
        .await
        .unwrap();
}

/// `--lost-majority` takes `serve` or `refuse`; anything else fails
/// startup and says which two it takes.
#[tokio::test]
async fn another_lost_majority_fails_startup() {
    let out = tokio::process::Command::new(BIN)
        .args(["node", "--name", "b1", "--lost-majority", "strict"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(r#"it must be "serve" or "refuse""#),
        "{stderr}"
    );
}
