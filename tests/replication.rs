//! Channels replicated on two brokers (`broker.replication_factor = 2`,
//! docs/replication.md), as real processes: three brokers with data
//! directories and two gateways. `kill -9` of a broker that owns some of
//! the channels: the next broker of each channel's failover order, which
//! stored every acknowledged publication, takes over in the same epoch at
//! the same offsets; subscribers see no `resubscribed` and no gap, and a
//! client that was away recovers with `recovered: true`.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_testkit::{
    WAIT,
    client::Client,
    cluster::{
        broker_with, gateway, scenario_config, scenario_config_with, seed_of, subscribe_once_routed,
    },
    process::Process,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn replicated_broker(name: &str, seed: Option<&str>, config: &str) -> Process {
    let dir = std::env::temp_dir().join(format!("sb-repl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir = dir.to_str().unwrap().to_owned();
    broker_with(
        Path::new(BIN),
        name,
        seed,
        &["--data-dir", &dir, "--config", config],
    )
    .await
    .unwrap()
}

/// Publishes `data` on `ch` until it is acknowledged (a publish during the
/// takeover may be refused); returns the acknowledged offset.
async fn publish_acknowledged(c: &mut Client, ch: &str, data: &str, since: Instant) -> u64 {
    try_publish(c, ch, data, since)
        .await
        .unwrap_or_else(|r| panic!("{ch} never accepted a publish again: {r}"))
}

async fn try_publish(
    c: &mut Client,
    ch: &str,
    data: &str,
    since: Instant,
) -> Result<u64, serde_json::Value> {
    loop {
        let r = c
            .request(json!({"type": "publish", "channel": ch, "data": data}))
            .await
            .unwrap();
        if r["type"] == "response" {
            return Ok(r["data"]["offset"].as_u64().unwrap_or_default());
        }
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
            Ok(offset) => offset,
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
        let f = sub
            .wait_for(|f| {
                f["channel"] == ch.as_str()
                    && (f["type"] == "message" || f["type"] == "resubscribed")
            })
            .await
            .unwrap();
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
    drop(brokers);
}
