//! Retiring idle replicated channels (docs/replication.md "Retiring an
//! idle channel"), as real processes: three brokers with R = 2 and two
//! gateways, history and idempotency keys kept 1 s. Channels published to
//! and left alone are forgotten by every broker once their publications
//! expire (`switchboard_replication_channels` falls to what is still in
//! use), while a subscribed channel is kept and goes on in its epoch; a
//! retired channel published to again starts a new epoch, replicated on
//! its replica set again.

use std::{path::Path, time::Duration};

use switchboard_testkit::{
    WAIT,
    client::Client,
    cluster::{
        broker_with, counter, gateway, publish_acknowledged, scenario_config, scenario_config_with,
        seed_of, subscribe_once_routed,
    },
    http,
    process::Process,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn data_dir(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("sb-retire-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.to_str().unwrap().to_owned()
}

/// Each broker's `switchboard_replication_channels`.
async fn held(brokers: &[Process]) -> Vec<f64> {
    let mut out = Vec::new();
    for b in brokers {
        let addr = b.announced("http://").expect("metrics address");
        let metrics = http::get(addr, "/metrics").await.map(|r| r.1);
        out.push(counter(
            &metrics.unwrap_or_default(),
            "switchboard_replication_channels",
        ));
    }
    out
}

/// Waits until every broker keeps replication state for `n` channels: a
/// WebSocket publish carries its gateway's idempotency key, kept 30 s, and
/// a channel is retired only once every key in its log has expired.
async fn held_everywhere(brokers: &[Process], n: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30) + WAIT * 3;
    loop {
        let now = held(brokers).await;
        if now.iter().all(|h| *h == n) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            for b in brokers {
                eprintln!("=== broker\n{}", b.log());
            }
            panic!("replication state held {now:?}, not {n} everywhere");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_channels_are_forgotten_everywhere_and_come_back_replicated() {
    let config = scenario_config_with("retire-broker", |c| {
        c.replacen("[broker]\n", "[broker]\nreplication_factor = 2\n", 1)
            .replace("idempotency_window = \"5m\"", "idempotency_window = \"1s\"")
            .replace("history_ttl = \"5m\"", "history_ttl = \"1s\"")
    })
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("idempotency_window = \"1s\"") && !text.contains("history_ttl = \"5m\""));
    let bin = Path::new(BIN);
    let start = |name: &'static str, seed: Option<String>| {
        let (config, dir) = (config.clone(), data_dir(name));
        async move {
            let args = ["--data-dir", dir.as_str(), "--config", config.as_str()];
            broker_with(bin, name, seed.as_deref(), &args)
                .await
                .unwrap()
        }
    };
    let b1 = start("b1", None).await;
    let seed = seed_of(&b1).unwrap();
    let brokers = vec![
        b1,
        start("b2", Some(seed.clone())).await,
        start("b3", Some(seed.clone())).await,
    ];
    let gw_config = scenario_config("retire-gw").unwrap();
    let gateways = [
        gateway(bin, "g1", &seed, &gw_config).await.unwrap(),
        gateway(bin, "g2", &seed, &gw_config).await.unwrap(),
    ];
    let mut sub = Client::connect(&gateways[0].ws_url()).await.unwrap();
    let mut publisher = Client::connect(&gateways[1].ws_url()).await.unwrap();

    let kept = subscribe_once_routed(&mut sub, "live:kept").await.unwrap();
    let kept_epoch = kept["epoch"].as_str().unwrap().to_owned();
    publish_acknowledged(&mut publisher, "live:kept", "k1")
        .await
        .unwrap();
    let mut first = Vec::new();
    for i in 0..10 {
        let ch = format!("live:{i}");
        for n in 1..=3 {
            let ack = publish_acknowledged(&mut publisher, &ch, &format!("p{n}"))
                .await
                .unwrap();
            if n == 1 {
                first.push(ack["epoch"].as_str().unwrap().to_owned());
            }
        }
    }
    // Every broker is a voter of every channel (three brokers, R = 2): 11
    // channels each, then only the subscribed one.
    held_everywhere(&brokers, 1.0).await;

    // The kept channel went on in its epoch.
    let ack = publish_acknowledged(&mut publisher, "live:kept", "k2")
        .await
        .unwrap();
    assert_eq!(
        (ack["epoch"].as_str(), ack["offset"].as_u64()),
        (Some(kept_epoch.as_str()), Some(2))
    );
    // A retired channel starts anew, replicated again.
    let ack = publish_acknowledged(&mut publisher, "live:0", "again")
        .await
        .unwrap();
    assert_eq!(ack["offset"].as_u64(), Some(1));
    assert_ne!(ack["epoch"].as_str(), Some(first[0].as_str()));
    held_everywhere(&brokers, 2.0).await;
    let retired: f64 = {
        let mut sum = 0.0;
        for b in &brokers {
            let addr = b.announced("http://").unwrap();
            let metrics = http::get(addr, "/metrics").await.unwrap().1;
            sum += counter(&metrics, "switchboard_replication_retired_total");
        }
        sum
    };
    assert!(retired >= 10.0, "{retired} channels retired");
}
