//! Every client message type against a real server over real sockets.

mod common;

use common::{ForTest, Settings, TestServer};
use serde_json::json;

#[tokio::test]
async fn subscribe_publish_and_receive_in_order() {
    let server = TestServer::dev().await;
    let mut alice = server.client().await;
    let mut bob = server.client().await;
    let sub = alice.subscribe("chat:room").await.unwrap();
    assert_eq!(sub["channel"], "chat:room");
    assert_eq!(sub["offset"], 0);
    assert!(sub["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(sub["recoverable"], true);
    assert!(
        sub.get("recovered").is_none(),
        "no since, no recovered: {sub}"
    );
    bob.subscribe("chat:room").await.unwrap();

    for i in 1..=20 {
        let ack = bob.publish("chat:room", json!({"n": i})).await.unwrap();
        assert_eq!(ack["offset"], i);
        assert_eq!(ack["epoch"], sub["epoch"]);
    }
    // Everyone subscribed receives everything, the publisher included, in order.
    for client in [&mut alice, &mut bob] {
        for i in 1..=20 {
            let m = client.message("chat:room").await.unwrap();
            assert_eq!(m["data"]["n"], i);
            assert_eq!(m["offset"], i);
            assert_eq!(m["from"], "");
            assert_eq!(m["epoch"], sub["epoch"]);
            assert!(m["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        }
    }
}

#[tokio::test]
async fn message_is_a_synonym_for_publish_and_publish_without_id_is_fire_and_forget() {
    let server = TestServer::dev().await;
    let mut c = server.client().await;
    c.subscribe("news").await.unwrap();
    c.send(json!({"type": "message", "channel": "news", "data": "one"}))
        .await
        .unwrap();
    c.send(json!({"type": "publish", "channel": "news", "data": "two"}))
        .await
        .unwrap();
    // No reply to either: after our own join event, the next frames are
    // the deliveries themselves.
    assert_eq!(c.next().await.unwrap()["type"], "join");
    let first = c.next().await.unwrap();
    assert_eq!(
        (first["type"].as_str(), first["data"].as_str()),
        (Some("message"), Some("one"))
    );
    let second = c.next().await.unwrap();
    assert_eq!(
        (second["type"].as_str(), second["data"].as_str()),
        (Some("message"), Some("two"))
    );
    // An error on a fire-and-forget publish still comes back, without id.
    c.send(json!({"type": "publish", "channel": "bad channel", "data": 1}))
        .await
        .unwrap();
    let err = c.next().await.unwrap();
    assert_eq!(err["type"], "error");
    assert!(err.get("id").is_none());
    assert_eq!(err["code"], 113);
}

#[tokio::test]
async fn replies_echo_the_id_with_its_json_type() {
    let server = TestServer::dev().await;
    let mut c = server.client().await;
    c.send(json!({"type": "ping", "id": "abc-1"}))
        .await
        .unwrap();
    assert_eq!(
        c.next().await.unwrap(),
        json!({"type": "pong", "id": "abc-1"})
    );
    c.send(json!({"type": "ping", "id": 7})).await.unwrap();
    assert_eq!(c.next().await.unwrap(), json!({"type": "pong", "id": 7}));
    c.send(json!({"type": "ping"})).await.unwrap();
    assert_eq!(c.next().await.unwrap(), json!({"type": "pong"}));
    c.send(json!({"type": "subscribe", "id": "s", "channel": "x"}))
        .await
        .unwrap();
    let reply = c.next().await.unwrap();
    assert_eq!(
        (reply["type"].as_str(), reply["id"].as_str()),
        (Some("response"), Some("s"))
    );
    assert!(
        reply.get("error").is_none(),
        "a success never has an error field: {reply}"
    );
    assert_eq!(c.next().await.unwrap()["type"], "join");
    c.send(json!({"type": "subscribe", "id": 9.5, "channel": "x"}))
        .await
        .unwrap();
    let err = c.next().await.unwrap();
    assert_eq!(
        (
            err["type"].as_str(),
            err["id"].as_f64(),
            err["code"].as_u64()
        ),
        (Some("error"), Some(9.5), Some(105))
    );
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = TestServer::dev().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("c:1").await.unwrap();
    a.ok(json!({"type": "unsubscribe", "channel": "c:1"}))
        .await
        .unwrap();
    let err = a
        .request(json!({"type": "unsubscribe", "channel": "c:1"}))
        .await
        .unwrap();
    assert_eq!(err["code"], 111);
    b.publish("c:1", json!("lost")).await.unwrap();
    // A marker on another channel proves the first publication was not delivered.
    a.subscribe("c:2").await.unwrap();
    b.publish("c:2", json!("marker")).await.unwrap();
    let next = a.wait_for(|f| f["type"] == "message").await.unwrap();
    assert_eq!(next["channel"], "c:2");
}

#[tokio::test]
async fn presence_counts_and_join_leave_across_connections() {
    let server = TestServer::dev().await;
    let mut watcher = server.user("watcher").await;
    watcher.subscribe("room:1").await.unwrap();
    let own_join = watcher.wait_for(|f| f["type"] == "join").await.unwrap();
    assert_eq!(own_join["info"]["user_id"], "watcher");

    let mut alice1 = server.user("alice").await;
    let mut alice2 = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut bob = bob;
    for c in [&mut alice1, &mut alice2, &mut bob] {
        c.subscribe("room:1").await.unwrap();
    }
    let mut joined = Vec::new();
    for _ in 0..3 {
        let j = watcher.wait_for(|f| f["type"] == "join").await.unwrap();
        assert_eq!(j["channel"], "room:1");
        joined.push(j["info"]["user_id"].as_str().unwrap().to_owned());
    }
    joined.sort();
    assert_eq!(joined, ["alice", "alice", "bob"]);

    let stats = watcher
        .ok(json!({"type": "presence_stats", "channel": "room:1"}))
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"channel": "room:1", "num_clients": 4, "num_users": 3})
    );
    let presence = watcher
        .ok(json!({"type": "presence", "channel": "room:1"}))
        .await
        .unwrap();
    let clients = presence["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 4);
    assert!(
        clients
            .iter()
            .all(|c| c["client_id"].as_str().is_some_and(|id| !id.is_empty()))
    );

    bob.close().await.unwrap();
    let left = watcher.wait_for(|f| f["type"] == "leave").await.unwrap();
    assert_eq!(left["info"]["user_id"], "bob");
    let stats = watcher
        .ok(json!({"type": "presence_stats", "channel": "room:1"}))
        .await
        .unwrap();
    assert_eq!(
        (stats["num_clients"].as_u64(), stats["num_users"].as_u64()),
        (Some(3), Some(2))
    );
}

#[tokio::test]
async fn history_pages_newest_first_and_after_a_position() {
    let server = TestServer::dev().await;
    let mut c = server.client().await;
    for i in 1..=5 {
        c.publish("log:a", json!(i)).await.unwrap();
    }
    let all = c
        .ok(json!({"type": "history", "channel": "log:a"}))
        .await
        .unwrap();
    let data = common::field(&all, "data");
    assert_eq!(data, [1, 2, 3, 4, 5].map(|i| json!(i)));
    assert_eq!(all["offset"], 5);
    let newest = c
        .ok(json!({"type": "history", "channel": "log:a", "limit": 2, "reverse": true}))
        .await
        .unwrap();
    let data = common::field(&newest, "data");
    assert_eq!(data, [json!(5), json!(4)]);
    let since = json!({"offset": 3, "epoch": all["epoch"]});
    let after = c
        .ok(json!({"type": "history", "channel": "log:a", "since": since}))
        .await
        .unwrap();
    assert_eq!(after["complete"], true);
    let offsets: Vec<u64> = common::offsets(&after);
    assert_eq!(offsets, [4, 5]);
}

#[tokio::test]
async fn recovery_after_reconnect_is_complete_or_says_it_is_not() {
    let mut s = Settings::for_test();
    s.namespaces.namespaces.get_mut("*").unwrap().history_size = 5;
    let server = TestServer::start(s).await;
    let mut publisher = server.client().await;
    let mut reader = server.client().await;
    let sub = reader.subscribe("feed:x").await.unwrap();
    let epoch = sub["epoch"].clone();
    publisher.publish("feed:x", json!(1)).await.unwrap();
    let seen = reader.message("feed:x").await.unwrap();
    assert_eq!(seen["offset"], 1);
    reader.close().await.unwrap();

    for i in 2..=4 {
        publisher.publish("feed:x", json!(i)).await.unwrap();
    }
    // Back within history: everything missed, in order, then live.
    let mut reader = server.client().await;
    let since = json!({"offset": 1, "epoch": epoch});
    let sub = reader
        .ok(json!({"type": "subscribe", "channel": "feed:x", "since": since}))
        .await
        .unwrap();
    assert_eq!(sub["recovered"], true);
    let offsets: Vec<u64> = common::offsets(&sub);
    assert_eq!(offsets, [2, 3, 4]);
    assert_eq!(sub["offset"], 4);
    publisher.publish("feed:x", json!(5)).await.unwrap();
    assert_eq!(reader.message("feed:x").await.unwrap()["offset"], 5);
    reader.close().await.unwrap();

    // Nothing missed: recovered with no publications.
    let mut again = server.client().await;
    let since = json!({"offset": 5, "epoch": epoch});
    let sub = again
        .ok(json!({"type": "subscribe", "channel": "feed:x", "since": since}))
        .await
        .unwrap();
    assert_eq!(
        (
            sub["recovered"].as_bool(),
            sub["publications"].as_array().map(Vec::len)
        ),
        (Some(true), Some(0))
    );
    again.close().await.unwrap();

    // Too far behind (history keeps 5): what is left, and recovered: false.
    for i in 6..=12 {
        publisher.publish("feed:x", json!(i)).await.unwrap();
    }
    let mut late = server.client().await;
    let since = json!({"offset": 2, "epoch": epoch});
    let sub = late
        .ok(json!({"type": "subscribe", "channel": "feed:x", "since": since}))
        .await
        .unwrap();
    assert_eq!(sub["recovered"], false);
    let offsets: Vec<u64> = common::offsets(&sub);
    assert_eq!(offsets, [8, 9, 10, 11, 12]);

    // Another epoch: continuity is lost; what the current epoch retains is
    // given, and not called recovered.
    let mut other = server.client().await;
    let since = json!({"offset": 2, "epoch": "not-this-one"});
    let sub = other
        .ok(json!({"type": "subscribe", "channel": "feed:x", "since": since}))
        .await
        .unwrap();
    assert_eq!(sub["recovered"], false);
    assert_eq!(common::offsets(&sub), [8, 9, 10, 11, 12]);
}

#[tokio::test]
async fn recovery_races_live_publications_without_gaps_or_duplicates() {
    let server = TestServer::dev().await;
    let mut publisher = server.client().await;
    let mut keeper = server.client().await;
    let sub = keeper.subscribe("race:1").await.unwrap();
    let epoch = sub["epoch"].clone();
    let publishing = tokio::spawn(async move {
        for i in 1..=200 {
            publisher
                .send(json!({"type": "publish", "channel": "race:1", "data": i}))
                .await
                .unwrap();
        }
        publisher
    });
    // Subscribe with recovery from 0 while publications stream in; the
    // reply plus the live frames after it must be exactly 1..=200.
    let mut late = server.client().await;
    let since = json!({"offset": 0, "epoch": epoch});
    let reply = late
        .ok(json!({"type": "subscribe", "channel": "race:1", "since": since}))
        .await
        .unwrap();
    assert_eq!(reply["recovered"], true);
    let mut offsets: Vec<u64> = common::offsets(&reply);
    while offsets.last().copied().unwrap_or(0) < 200 {
        offsets.push(
            late.message("race:1").await.unwrap()["offset"]
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(offsets, (1..=200).collect::<Vec<_>>());
    publishing.await.unwrap();
}

#[tokio::test]
async fn personal_channels_reach_every_connection_of_a_user() {
    let server = TestServer::dev().await;
    let mut alice1 = server.user("alice").await;
    let mut alice2 = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let online = bob
        .ok(json!({"type": "presence_stats", "channel": "#alice"}))
        .await
        .unwrap();
    assert_eq!(
        (online["num_clients"].as_u64(), online["num_users"].as_u64()),
        (Some(2), Some(1))
    );
    let nobody = bob
        .ok(json!({"type": "presence_stats", "channel": "#carol"}))
        .await
        .unwrap();
    assert_eq!(nobody["num_clients"], 0);
    bob.publish("#alice", json!({"dm": "hi"})).await.unwrap();
    for a in [&mut alice1, &mut alice2] {
        let m = a.message("#alice").await.unwrap();
        assert_eq!(
            (m["from"].as_str(), m["data"]["dm"].as_str()),
            (Some("bob"), Some("hi"))
        );
    }
    // Only alice reads her channel's history and client list.
    let e = bob
        .request(json!({"type": "history", "channel": "#alice"}))
        .await
        .unwrap();
    assert_eq!(e["code"], 103);
    let e = bob
        .request(json!({"type": "presence", "channel": "#alice"}))
        .await
        .unwrap();
    assert_eq!(e["code"], 103);
    let own = alice1
        .ok(json!({"type": "history", "channel": "#alice"}))
        .await
        .unwrap();
    assert_eq!(own["publications"][0]["data"]["dm"], "hi");
    // Personal channels are managed by the server, not subscribed by hand.
    let err = bob
        .request(json!({"type": "subscribe", "channel": "#alice"}))
        .await
        .unwrap();
    assert_eq!(err["code"], 103);
    // Anonymous clients cannot send to users.
    let mut anon = server.client().await;
    let err = anon
        .request(json!({"type": "publish", "channel": "#alice", "data": 1}))
        .await
        .unwrap();
    assert_eq!(err["code"], 103);
}

#[tokio::test]
async fn namespace_options_are_enforced() {
    let mut s = Settings::for_test();
    let ns = &mut s.namespaces.namespaces;
    ns.insert(
        "quiet".into(),
        switchboard_core::NamespaceOptions {
            allow_publish: false,
            ..Default::default()
        },
    );
    ns.insert(
        "vip".into(),
        switchboard_core::NamespaceOptions {
            require_claim: true,
            allow_publish: true,
            ..Default::default()
        },
    );
    ns.remove("*");
    ns.insert("".into(), switchboard_core::NamespaceOptions::permissive());
    let server = TestServer::start(s).await;
    let mut c = server.client().await;
    let e = c
        .request(json!({"type": "subscribe", "channel": "nope:1"}))
        .await
        .unwrap();
    assert_eq!(
        (e["code"].as_u64(), e["error"].as_str()),
        (Some(102), Some("unknown channel namespace"))
    );
    c.subscribe("quiet:1").await.unwrap();
    let e = c
        .request(json!({"type": "publish", "channel": "quiet:1", "data": 1}))
        .await
        .unwrap();
    assert_eq!(e["code"], 103);
    let e = c
        .request(json!({"type": "presence", "channel": "quiet:1"}))
        .await
        .unwrap();
    assert_eq!(e["code"], 108);
    let e = c
        .request(json!({"type": "history", "channel": "quiet:1"}))
        .await
        .unwrap();
    assert_eq!(e["code"], 108);
    let e = c
        .request(json!({"type": "subscribe", "channel": "vip:1"}))
        .await
        .unwrap();
    assert_eq!(e["code"], 103);
    c.subscribe("lobby").await.unwrap();

    let vip_token = common::issuer().issue(
        "vera",
        std::time::Duration::from_secs(60),
        Some(vec!["vip:*".into()]),
    );
    let mut vera = common::Client::connect(&format!("{}?token={vip_token}", server.url()))
        .await
        .unwrap();
    vera.subscribe("vip:1").await.unwrap();
    vera.publish("vip:1", json!("hello")).await.unwrap();
    // The claim limits the user to its patterns, everywhere.
    let e = vera
        .request(json!({"type": "subscribe", "channel": "lobby"}))
        .await
        .unwrap();
    assert_eq!(e["code"], 103);
}

#[tokio::test]
async fn replies_larger_than_the_write_buffer_are_delivered() {
    let server = TestServer::dev().await;
    let mut c = server.client().await;
    let chunk = "x".repeat(30 * 1024);
    for i in 0..12 {
        c.publish("big:h", json!({"i": i, "pad": chunk}))
            .await
            .unwrap();
    }
    // About 370 KiB in one reply frame.
    let h = c
        .ok(json!({"type": "history", "channel": "big:h"}))
        .await
        .unwrap();
    assert_eq!(h["publications"].as_array().unwrap().len(), 12);
    assert_eq!(
        c.request(json!({"type": "ping"})).await.unwrap()["type"],
        "pong"
    );
}
