//! The broker's memory budget and the limits that keep clients from
//! filling it, over real sockets: a flood of new channels is refused once
//! the budget is spent while a bystander keeps receiving every message;
//! history is capped in bytes; publishing can require a subscription; a
//! connection may touch only so many channels per interval.

mod common;

use std::time::Duration;

use common::{Client, ForTest, Settings, TestServer, field, http, offsets};
use serde_json::{Value, json};
use switchboard_core::NamespaceOptions;
use switchboard_node::BrokerConfig;

const OVER_CAPACITY: u64 = 115;

fn code(reply: &Value) -> Option<u64> {
    (reply["type"] == "error")
        .then(|| reply["code"].as_u64())
        .flatten()
}

/// Publishes to new channels until one is refused; returns how many were
/// accepted and the refusal.
async fn flood_new_channels(c: &mut Client, tag: usize) -> (usize, Value) {
    for i in 0.. {
        let reply = c
            .request(json!({"type": "publish", "channel": format!("flood:{tag}-{i}"), "data": i}))
            .await
            .unwrap();
        if reply["type"] != "response" {
            return (i, reply);
        }
    }
    unreachable!()
}

#[tokio::test]
async fn new_channels_are_refused_over_budget_while_a_bystander_receives_every_message() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_channels_per_interval = 0;
    let broker = BrokerConfig {
        memory_budget_bytes: 400 * 1024,
        ..Default::default()
    };
    let server = TestServer::start_with(s, broker, false).await;
    let mut bystander = server.client().await;
    bystander.subscribe("chat:bystander").await.unwrap();
    let mut speaker = server.client().await;

    let mut flooders = Vec::new();
    for tag in 0..4 {
        let mut c = server.client().await;
        flooders.push(tokio::spawn(async move {
            let out = flood_new_channels(&mut c, tag).await;
            (c, out)
        }));
    }
    // The bystander's channel is spoken in all along: before, during and
    // after the budget runs out.
    let mut sent = 0u64;
    while flooders.iter().any(|f| !f.is_finished()) {
        speaker
            .publish("chat:bystander", json!(sent))
            .await
            .unwrap();
        sent += 1;
        assert!(sent < 100_000, "the flood was never refused");
    }
    let mut accepted = 0;
    for f in flooders {
        let (mut c, (n, refusal)) = f.await.unwrap();
        accepted += n;
        assert_eq!(code(&refusal), Some(OVER_CAPACITY), "{refusal}");
        // Still refused, and the connection stays open.
        let again = c
            .request(json!({"type": "subscribe", "channel": "flood:another"}))
            .await
            .unwrap();
        assert_eq!(code(&again), Some(OVER_CAPACITY), "{again}");
        c.ok(json!({"type": "ping"})).await.ok();
    }
    assert!(
        accepted > 50,
        "only {accepted} channels before the budget ran out"
    );
    for i in 0..20 {
        speaker
            .publish("chat:bystander", json!(sent + i))
            .await
            .unwrap();
    }
    sent += 20;
    for i in 0..sent {
        let m = bystander.message("chat:bystander").await.unwrap();
        assert_eq!(m["data"], json!(i), "{m}");
    }

    let (_, metrics) = http::get(server.addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("switchboard_broker_over_budget_total{refused=\"new_channel\"}"),
        "{metrics}"
    );
    // (The gauges' values are the last broker's to sweep: other tests in
    // this process run servers of their own.)
    assert!(
        metrics.contains("switchboard_broker_memory_bytes "),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_broker_memory_budget_bytes "));
}

#[tokio::test]
async fn history_is_capped_in_bytes() {
    let mut s = Settings::for_test();
    s.namespaces.namespaces.insert(
        "big".into(),
        NamespaceOptions {
            history_max_bytes: 256 * 1024,
            ..NamespaceOptions::permissive()
        },
    );
    let server = TestServer::start(s).await;
    let mut c = server.client().await;
    let payload = "x".repeat(60 * 1024);
    for i in 0..20 {
        c.publish("big:room", json!({"n": i, "pad": payload}))
            .await
            .unwrap();
    }
    let reply = c
        .ok(json!({"type": "history", "channel": "big:room"}))
        .await
        .unwrap();
    let kept = offsets(&reply);
    // Four 60 KB publications fit in 256 KiB, a fifth does not.
    assert_eq!(kept, vec![17, 18, 19, 20], "{:?}", field(&reply, "offset"));
}

#[tokio::test]
async fn publishing_can_require_a_subscription() {
    let mut s = Settings::for_test();
    s.namespaces.namespaces.insert(
        "members".into(),
        NamespaceOptions {
            publish_requires_subscription: true,
            ..NamespaceOptions::permissive()
        },
    );
    let server = TestServer::start(s).await;
    let mut c = server.client().await;
    let refused = c
        .request(json!({"type": "publish", "channel": "members:a", "data": 1}))
        .await
        .unwrap();
    assert_eq!(code(&refused), Some(111), "{refused}");
    c.subscribe("members:a").await.unwrap();
    c.publish("members:a", json!(2)).await.unwrap();
    assert_eq!(c.message("members:a").await.unwrap()["data"], json!(2));
    // Other namespaces keep the default.
    c.publish("chat:a", json!(3)).await.unwrap();
}

#[tokio::test]
async fn a_connection_touches_only_so_many_channels_per_interval() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_channels_per_interval = 3;
    s.gateway.limits.channel_quota_interval = Duration::from_secs(3600);
    let server = TestServer::start(s).await;
    let mut c = server.client().await;
    c.subscribe("chat:a").await.unwrap();
    c.publish("chat:b", json!(1)).await.unwrap();
    c.publish("chat:c", json!(1)).await.unwrap();
    for frame in [
        json!({"type": "publish", "channel": "chat:d", "data": 1}),
        json!({"type": "subscribe", "channel": "chat:e"}),
    ] {
        let refused = c.request(frame).await.unwrap();
        assert_eq!(code(&refused), Some(110), "{refused}");
    }
    // Channels already counted stay usable.
    c.publish("chat:a", json!(2)).await.unwrap();
    c.publish("chat:b", json!(2)).await.unwrap();
    // Another connection has its own quota.
    let mut other = server.client().await;
    other.publish("chat:d", json!(1)).await.unwrap();
}
