//! A cluster that assembles itself by gossip: three brokers and two
//! gateways seeded with one broker's gossip address. Then the owner of some
//! channels is killed with SIGKILL and the ring moves them to the next
//! broker.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_testkit::{
    WAIT,
    client::Client,
    cluster::{broker, gateway, scenario_config, seed_of, subscribe_once_routed},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owner_fails_over_to_the_next_broker() {
    let bin = Path::new(BIN);
    let b1 = broker(bin, "b1", None).await.unwrap();
    let seed = seed_of(&b1).unwrap();
    let mut others = vec![
        broker(bin, "b2", Some(&seed)).await.unwrap(),
        broker(bin, "b3", Some(&seed)).await.unwrap(),
    ];
    let config = scenario_config("gossip").unwrap();
    let gateways = [
        gateway(bin, "g1", &seed, &config).await.unwrap(),
        gateway(bin, "g2", &seed, &config).await.unwrap(),
    ];

    // Wait (bounded) until both gateways route to all three brokers: a
    // publish on every channel succeeds through each.
    let channels: Vec<String> = (0..12).map(|i| format!("live:{i}")).collect();
    let mut a = Client::connect(&gateways[0].ws_url()).await.unwrap();
    let mut b = Client::connect(&gateways[1].ws_url()).await.unwrap();
    let mut epochs = std::collections::HashMap::new();
    for ch in &channels {
        let r = subscribe_once_routed(&mut a, ch).await.unwrap();
        epochs.insert(ch.clone(), r["epoch"].as_str().unwrap().to_owned());
    }
    for ch in &channels {
        b.publish(ch, json!("before")).await.unwrap();
        assert_eq!(a.message(ch).await.unwrap()["data"], "before");
    }

    // kill -9 b2. Its channels fail over to their next broker on the ring.
    let killed_at = Instant::now();
    others[0].kill().await.unwrap();
    let mut resumed = Vec::new();
    for ch in &channels {
        loop {
            let r = b
                .request(json!({"type": "publish", "channel": ch, "data": "after"}))
                .await
                .unwrap();
            if r["type"] == "response" {
                break;
            }
            assert!(
                killed_at.elapsed() < WAIT * 3,
                "{ch} never failed over: {r}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        resumed.push(killed_at.elapsed());
    }
    let mut moved = 0;
    for ch in &channels {
        let f = a
            .wait_for(|f| {
                f["channel"] == ch.as_str()
                    && (f["type"] == "message" || f["type"] == "resubscribed")
            })
            .await
            .unwrap();
        if f["type"] == "resubscribed" {
            moved += 1;
            assert_eq!(f["recovered"], false);
            assert_ne!(f["epoch"].as_str().unwrap(), epochs[ch]);
            let next = a.message(ch).await.unwrap();
            assert_eq!(
                (next["data"].as_str(), next["epoch"].as_str()),
                (Some("after"), f["epoch"].as_str())
            );
        } else {
            assert_eq!(
                (f["data"].as_str(), f["epoch"].as_str()),
                (Some("after"), Some(epochs[ch].as_str()))
            );
        }
    }
    let worst = resumed.iter().max().unwrap();
    println!(
        "failover: {moved} of {} channels moved; publishing resumed on all within {worst:?} of kill -9",
        channels.len()
    );
    assert!(moved > 0, "b2 owned none of the channels");
    drop(others);
}
