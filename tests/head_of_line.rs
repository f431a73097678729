//! No head-of-line blocking between a connection's channels: one
//! connection publishes at full speed to a channel on a live broker while
//! another of its channels waits on a broker stopped with SIGSTOP. The
//! live channel's publishes are all answered, in order, while the stopped
//! one's are pending; the stopped channel's publishes are applied in the
//! order sent once its broker runs again; and a connection at its
//! in-flight limit stops reading until an answer makes room.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use switchboard_cluster::ring::Ring;
use switchboard_testkit::{
    client::Client,
    cluster::{broker, gateway, scenario_config_with, seed_of, subscribe_once_routed},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// `limits.max_requests_in_flight` for this test's gateway.
const IN_FLIGHT: usize = 8;
/// Publishes sent at once to the live channel.
const LIVE: usize = 100;

/// The first channel `{prefix}{i}` that `owner` owns on a ring of b1 and b2.
fn channel_owned_by(owner: &str, prefix: &str) -> String {
    let ring = Ring::new(["b1", "b2"]);
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|c| ring.owner(c) == Some(owner))
        .expect("some channel is owned by each broker")
}

fn publish(id: &str, channel: &str, data: Value) -> Value {
    json!({"type": "publish", "id": id, "channel": channel, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_owner_holds_up_only_its_own_channels() {
    let bin = Path::new(BIN);
    let b1 = broker(bin, "b1", None).await.unwrap();
    let seed = seed_of(&b1).unwrap();
    let b2 = broker(bin, "b2", Some(&seed)).await.unwrap();
    let config = scenario_config_with("hol", |c| {
        c.replace(
            "max_requests_in_flight = 64",
            &format!("max_requests_in_flight = {IN_FLIGHT}"),
        )
    })
    .unwrap();
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains(&format!("max_requests_in_flight = {IN_FLIGHT}")),
        "config/dev.toml changed; update this test"
    );
    let g = gateway(bin, "g1", &seed, &config).await.unwrap();
    let live = channel_owned_by("b1", "hol:live:");
    let stuck = channel_owned_by("b2", "hol:stuck:");

    // Both owners reachable through the gateway, and a subscriber on each.
    let mut watcher = Client::connect(&g.ws_url()).await.unwrap();
    let live_start = subscribe_once_routed(&mut watcher, &live).await.unwrap()["offset"]
        .as_u64()
        .unwrap();
    subscribe_once_routed(&mut watcher, &stuck).await.unwrap();
    let mut publisher = Client::connect(&g.ws_url()).await.unwrap();

    b2.freeze().unwrap();
    publisher
        .send(publish("stuck-1", &stuck, json!(1)))
        .await
        .unwrap();
    for i in 0..LIVE {
        publisher
            .send(publish(&format!("live-{i}"), &live, json!(i)))
            .await
            .unwrap();
    }
    // Every live publish is answered while the stuck one waits, each in
    // turn: one channel's publishes are applied in the order sent.
    let mut offsets = Vec::new();
    while offsets.len() < LIVE {
        let f = publisher.next().await.unwrap();
        assert_ne!(
            f["id"], "stuck-1",
            "the stopped owner answered before the live channel was done: {f}"
        );
        assert_eq!(f["type"], "response", "{f}");
        assert_eq!(f["id"], format!("live-{}", offsets.len()), "{f}");
        offsets.push(f["data"]["offset"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (1..=LIVE as u64).map(|n| live_start + n).collect();
    assert_eq!(offsets, expected);

    // Fill the connection to its limit with the stopped channel's
    // publishes: then it reads nothing more, not even a ping.
    for n in 2..=IN_FLIGHT {
        publisher
            .send(publish(&format!("stuck-{n}"), &stuck, json!(n)))
            .await
            .unwrap();
    }
    publisher
        .send(json!({"type": "ping", "id": "ping"}))
        .await
        .unwrap();
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        publisher.wait_for(|f| f["id"] == "ping"),
    )
    .await;
    assert!(early.is_err(), "read past the in-flight limit: {early:?}");

    b2.thaw().unwrap();
    // The ping is read once the first answer makes room, so its pong
    // comes after that answer, and perhaps before later ones.
    let mut stuck_offsets = Vec::new();
    let mut pong_after = None;
    while stuck_offsets.len() < IN_FLIGHT || pong_after.is_none() {
        let f = publisher.next().await.unwrap();
        if f["type"] == "pong" {
            pong_after = Some(stuck_offsets.len());
            continue;
        }
        let n = stuck_offsets.len() + 1;
        assert_eq!(
            (f["type"].as_str(), f["id"].as_str()),
            (Some("response"), Some(format!("stuck-{n}").as_str())),
            "{f}"
        );
        stuck_offsets.push(f["data"]["offset"].as_u64().unwrap());
    }
    assert!(pong_after >= Some(1), "the ping was read past the limit");
    assert!(
        stuck_offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "the stopped channel's publishes applied out of order: {stuck_offsets:?}"
    );

    // Subscribers saw each channel in the order it was published.
    for (i, offset) in expected.iter().enumerate() {
        let m = watcher.message(&live).await.unwrap();
        assert_eq!(
            (m["data"].as_u64(), m["offset"].as_u64()),
            (Some(i as u64), Some(*offset))
        );
    }
    for n in 1..=IN_FLIGHT {
        let m = watcher.message(&stuck).await.unwrap();
        assert_eq!(m["data"], json!(n));
    }
    drop(b2);
}
