//! The server API over real HTTP, against a real server, with real
//! WebSocket clients on the receiving end.

mod common;

use std::time::Duration;

use common::{API_KEY, Client, ForTest, OLD_API_KEY, Settings, TestServer};
use serde_json::{Value, json};
use switchboard_core::NamespaceOptions;
use switchboard_node::BrokerConfig;
use switchboard_testkit::api::Http;

fn api(server: &TestServer) -> Http {
    Http::new(server.api_addr, Some(API_KEY))
}

/// `publisher` publishes a marker on `channel`; `c` (subscribed to it) must
/// see it next, which proves that nothing else was queued before it.
async fn nothing_else_before_marker(c: &mut Client, api: &Http, channel: &str) {
    api.ok("publish", json!({"channel": channel, "data": "marker"}))
        .await
        .unwrap();
    let next = c
        .wait_for(|f| f["type"] == "message" || f["type"] == "unsubscribed")
        .await
        .unwrap();
    assert_eq!(next["data"], "marker", "{next}");
}

#[tokio::test]
async fn both_keys_work_and_anything_else_gets_a_clear_401() {
    let server = TestServer::dev().await;
    for key in [API_KEY, OLD_API_KEY] {
        let reply = Http::new(server.addr, Some(key))
            .call("info", json!({}))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for (key, why) in [
        (None, "missing API key"),
        (Some("nope"), "API key not accepted"),
    ] {
        let reply = Http::new(server.addr, key)
            .call("publish", json!({"channel": "chat:a", "data": 1}))
            .await
            .unwrap();
        assert_eq!(reply.status, 401);
        assert_eq!(reply.error_code(), "unauthorized");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(why),
            "{}",
            reply.body
        );
        assert_eq!(reply.headers["www-authenticate"], "apikey");
    }
    let bearer = Http::new(server.addr, None)
        .send(
            http::Method::POST,
            "/api/info",
            &[("authorization", &format!("Bearer {API_KEY}"))],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!((bearer.status, bearer.error_code()), (401, "unauthorized"));
    // Unknown calls are behind the key too: nothing is revealed without one.
    let probe = Http::new(server.addr, None)
        .call("no_such_call", json!({}))
        .await
        .unwrap();
    assert_eq!(probe.status, 401);
}

#[tokio::test]
async fn publish_reaches_subscribers_and_history_pages_through_it() {
    let server = TestServer::dev().await;
    let api = api(&server);
    let mut c = server.client().await;
    c.subscribe("chat:news").await.unwrap();
    let mut offsets = Vec::new();
    for i in 1..=3 {
        let r = api
            .ok("publish", json!({"channel": "chat:news", "data": {"n": i}}))
            .await
            .unwrap();
        offsets.push(r["offset"].as_u64().unwrap());
        let m = c.message("chat:news").await.unwrap();
        assert_eq!(
            (m["data"]["n"].clone(), m["from"].clone()),
            (json!(i), json!(""))
        );
        assert_eq!(m["offset"], r["offset"]);
        assert_eq!(m["epoch"], r["epoch"]);
    }
    assert_eq!(offsets, [1, 2, 3]);

    let page = api
        .ok("history", json!({"channel": "chat:news", "limit": 2}))
        .await
        .unwrap();
    assert_eq!(page["offset"], 3);
    let pubs = page["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 2);
    assert_eq!(pubs[0]["data"], json!({"n": 1}));
    assert!(page.get("complete").is_none());
    let next = api
        .ok(
            "history",
            json!({"channel": "chat:news", "limit": 2,
                   "since": {"offset": pubs[1]["offset"], "epoch": pubs[1]["epoch"]}}),
        )
        .await
        .unwrap();
    assert_eq!(next["complete"], true);
    let rest: Vec<Value> = next["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].clone())
        .collect();
    assert_eq!(rest, [json!(3)]);
    let newest = api
        .ok(
            "history",
            json!({"channel": "chat:news", "limit": 1, "reverse": true}),
        )
        .await
        .unwrap();
    assert_eq!(newest["publications"][0]["offset"], 3);
}

#[tokio::test]
async fn a_retried_publish_with_its_idempotency_key_is_delivered_once() {
    // Two gateways would not change the outcome: the owner dedupes. Here
    // the API has its own listener, as in production.
    let server = TestServer::start_with(Settings::for_test(), BrokerConfig::default(), true).await;
    let api = api(&server);
    let mut c = server.client().await;
    c.subscribe("orders:42").await.unwrap();
    let body = json!({"channel": "orders:42", "data": {"status": "shipped"}, "idempotency_key": "order-42-shipped"});
    let first = api.ok("publish", body.clone()).await.unwrap();
    let retry = api.ok("publish", body.clone()).await.unwrap();
    assert_eq!(first, retry);
    let m = c.message("orders:42").await.unwrap();
    assert_eq!(m["offset"], first["offset"]);
    // The next message the subscriber sees is the marker: the retry
    // delivered nothing.
    nothing_else_before_marker(&mut c, &api, "orders:42").await;
    let other = api
        .ok(
            "publish",
            json!({"channel": "orders:42", "data": 1, "idempotency_key": "another"}),
        )
        .await
        .unwrap();
    assert_eq!(other["offset"], 3);
    let history = api
        .ok("history", json!({"channel": "orders:42"}))
        .await
        .unwrap();
    assert_eq!(history["publications"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn idempotency_keys_expire_after_the_window() {
    let broker = BrokerConfig {
        idempotency_window: Duration::from_millis(200),
        ..Default::default()
    };
    let server = TestServer::start_with(Settings::for_test(), broker, false).await;
    let api = api(&server);
    let body = json!({"channel": "orders:1", "data": 1, "idempotency_key": "k"});
    let first = api.ok("publish", body.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = api.ok("publish", body).await.unwrap();
    assert_eq!(
        later["offset"].as_u64(),
        first["offset"].as_u64().map(|o| o + 1)
    );
}

#[tokio::test]
async fn broadcast_publishes_to_every_channel_or_to_none() {
    let server = TestServer::dev().await;
    let api = api(&server);
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("prices:btc").await.unwrap();
    b.subscribe("prices:eth").await.unwrap();
    let r = api
        .ok(
            "broadcast",
            json!({"channels": ["prices:btc", "prices:eth"], "data": {"tick": 1}}),
        )
        .await
        .unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["channel"], "prices:btc");
    assert_eq!(results[1]["offset"], 1);
    assert_eq!(a.message("prices:btc").await.unwrap()["data"]["tick"], 1);
    assert_eq!(b.message("prices:eth").await.unwrap()["data"]["tick"], 1);

    for (channels, code) in [
        (json!(["prices:btc", "bad name"]), "invalid_channel"),
        (json!(["prices:btc", "prices:btc"]), "bad_request"),
        (json!([]), "bad_request"),
        (
            json!((0..1001).map(|i| format!("c:{i}")).collect::<Vec<_>>()),
            "bad_request",
        ),
    ] {
        let reply = api
            .call("broadcast", json!({"channels": channels, "data": 2}))
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.error_code()),
            (400, code),
            "{}",
            reply.body
        );
    }
    // Nothing of the refused broadcasts was published.
    nothing_else_before_marker(&mut a, &api, "prices:btc").await;
}

#[tokio::test]
async fn send_to_user_reaches_every_connection_of_that_user_only() {
    let server = TestServer::dev().await;
    let api = api(&server);
    let mut alice1 = server.user("alice").await;
    let mut alice2 = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let r = api
        .ok(
            "send_to_user",
            json!({"user": "alice", "data": {"text": "your order shipped"}}),
        )
        .await
        .unwrap();
    assert_eq!(r["offset"], 1);
    for c in [&mut alice1, &mut alice2] {
        let m = c.message("#alice").await.unwrap();
        assert_eq!(m["data"]["text"], "your order shipped");
    }
    api.ok("send_to_user", json!({"user": "bob", "data": "marker"}))
        .await
        .unwrap();
    assert_eq!(bob.message("#bob").await.unwrap()["data"], "marker");
    let online = api
        .ok("user_online", json!({"user": "alice"}))
        .await
        .unwrap();
    assert_eq!(
        online,
        json!({"user": "alice", "online": true, "num_clients": 2})
    );
    let offline = api
        .ok("user_online", json!({"user": "carol"}))
        .await
        .unwrap();
    assert_eq!(offline["online"], false);
}

#[tokio::test]
async fn disconnect_user_closes_all_their_connections_with_the_given_code() {
    let server = TestServer::dev().await;
    let api = api(&server);
    let alice1 = server.user("alice").await;
    let alice2 = server.user("alice").await;
    let mut bob = server.user("bob").await;
    bob.subscribe("chat:room").await.unwrap();
    api.ok(
        "disconnect_user",
        json!({"user": "alice", "code": 4403, "reason": "banned", "reconnect": false}),
    )
    .await
    .unwrap();
    for c in [alice1, alice2] {
        let closed = c.closed().await.unwrap();
        assert_eq!(
            (closed.code, closed.reason.as_str()),
            (Some(4403), "banned")
        );
        assert_eq!(
            closed.disconnect().unwrap(),
            &json!({"type": "disconnect", "code": 4403, "reason": "banned", "reconnect": false})
        );
    }
    // Bob is untouched.
    nothing_else_before_marker(&mut bob, &api, "chat:room").await;
    let online = api
        .ok("user_online", json!({"user": "alice"}))
        .await
        .unwrap();
    assert_eq!(online["online"], false);

    let again = server.user("alice").await;
    api.ok(
        "disconnect_user",
        json!({"user": "alice", "reconnect": true}),
    )
    .await
    .unwrap();
    let closed = again.closed().await.unwrap();
    assert_eq!(closed.code, Some(4000));
    assert_eq!(
        closed.disconnect().unwrap()["reason"],
        "disconnected by the server"
    );
    assert_eq!(closed.disconnect().unwrap()["reconnect"], true);
}

#[tokio::test]
async fn unsubscribe_user_ends_their_subscription_with_a_notice() {
    let server = TestServer::dev().await;
    let api = api(&server);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.subscribe("chat:vip").await.unwrap();
    alice.subscribe("chat:lobby").await.unwrap();
    bob.subscribe("chat:vip").await.unwrap();
    api.ok(
        "unsubscribe_user",
        json!({"user": "alice", "channel": "chat:vip"}),
    )
    .await
    .unwrap();
    let notice = alice
        .wait_for(|f| f["type"] == "unsubscribed")
        .await
        .unwrap();
    assert_eq!(
        notice,
        json!({"type": "unsubscribed", "channel": "chat:vip"})
    );
    api.ok(
        "publish",
        json!({"channel": "chat:vip", "data": "vip only"}),
    )
    .await
    .unwrap();
    assert_eq!(bob.message("chat:vip").await.unwrap()["data"], "vip only");
    // Alice still has her other subscription and gets nothing from chat:vip.
    api.ok(
        "publish",
        json!({"channel": "chat:lobby", "data": "marker"}),
    )
    .await
    .unwrap();
    let next = alice.wait_for(|f| f["type"] == "message").await.unwrap();
    assert_eq!(
        (next["channel"].as_str(), next["data"].as_str()),
        (Some("chat:lobby"), Some("marker"))
    );
    let presence = api
        .ok("presence", json!({"channel": "chat:vip"}))
        .await
        .unwrap();
    let users: Vec<&str> = presence["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["bob"]);
    // She may come back: it was an unsubscribe, not a ban.
    alice.subscribe("chat:vip").await.unwrap();
}

#[tokio::test]
async fn presence_channels_and_info() {
    let server = TestServer::dev().await;
    let api = api(&server);
    let mut alice = server.user("alice").await;
    let mut anon = server.client().await;
    alice.subscribe("room:1").await.unwrap();
    anon.subscribe("room:1").await.unwrap();
    anon.subscribe("room:2").await.unwrap();
    let presence = api
        .ok("presence", json!({"channel": "room:1"}))
        .await
        .unwrap();
    assert_eq!(presence["channel"], "room:1");
    assert_eq!(presence["clients"].as_array().unwrap().len(), 2);
    let stats = api
        .ok("presence_stats", json!({"channel": "room:1"}))
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"channel": "room:1", "num_clients": 2, "num_users": 2})
    );
    let channels = api
        .ok("channels", json!({"prefix": "room:"}))
        .await
        .unwrap();
    assert_eq!(
        channels,
        json!({"channels": [
            {"channel": "room:1", "num_clients": 2, "num_users": 2},
            {"channel": "room:2", "num_clients": 1, "num_users": 1}
        ], "truncated": false})
    );
    let cut = api
        .ok("channels", json!({"prefix": "room:", "limit": 1}))
        .await
        .unwrap();
    assert_eq!(cut["truncated"], true);
    let all = api.ok("channels", json!({})).await.unwrap();
    assert!(
        all["channels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["channel"] == "#alice"),
        "{all}"
    );
    let info = api.ok("info", json!({})).await.unwrap();
    assert_eq!(info["gateway"]["name"], "test-gw");
    assert_eq!(info["gateway"]["connections"], 2);
    let node = &info["nodes"][0];
    assert_eq!(node["num_gateways"], 1);
    assert_eq!(node["num_clients"], 4, "{info}");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_code_and_message_never_a_500() {
    let mut s = Settings::for_test();
    // A closed world: only `chat` (with presence and history) and `quiet`
    // (neither) exist.
    s.namespaces.namespaces.clear();
    s.namespaces
        .namespaces
        .insert("chat".into(), NamespaceOptions::permissive());
    s.namespaces
        .namespaces
        .insert("quiet".into(), NamespaceOptions::default());
    s.api.max_data_bytes = 1000;
    s.api.max_body_bytes = 4000;
    let server = TestServer::start(s).await;
    let api = api(&server);
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let json_cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "publish",
            r#"{"channel":"chat:a","data":"#.into(),
            400,
            "bad_request",
        ),
        (
            "publish",
            r#"{"channel":"chat:a"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "publish",
            r#"{"channel":7,"data":1}"#.into(),
            400,
            "bad_request",
        ),
        ("publish", r#"[1,2]"#.into(), 400, "bad_request"),
        (
            "publish",
            r#"{"channel":"chat:a","data":1,"extra":true}"#.into(),
            400,
            "bad_request",
        ),
        (
            "publish",
            r#"{"channel":"nowhere:a","data":1}"#.into(),
            400,
            "unknown_namespace",
        ),
        (
            "publish",
            r#"{"channel":"chat:a b","data":1}"#.into(),
            400,
            "invalid_channel",
        ),
        (
            "publish",
            r#"{"channel":"","data":1}"#.into(),
            400,
            "invalid_channel",
        ),
        (
            "publish",
            format!(r#"{{"channel":"chat:a","data":"{}"}}"#, "x".repeat(1200)),
            413,
            "too_large",
        ),
        (
            "publish",
            format!(r#"{{"channel":"chat:a","data":"{}"}}"#, "x".repeat(5000)),
            413,
            "too_large",
        ),
        (
            "publish",
            format!(r#"{{"channel":"chat:a","data":{deep}}}"#),
            400,
            "bad_request",
        ),
        // Data that strict parsers cannot read (docs/protocol.md §8).
        (
            "publish",
            r#"{"channel":"chat:a","data":{"n":1e999999}}"#.into(),
            400,
            "bad_request",
        ),
        (
            "broadcast",
            r#"{"channels":["chat:a"],"data":"\ud800"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "send_to_user",
            format!(r#"{{"user":"alice","data":{}}}"#, "9".repeat(500)),
            400,
            "bad_request",
        ),
        (
            "publish",
            r#"{"channel":"chat:a","data":1,"idempotency_key":""}"#.into(),
            400,
            "bad_request",
        ),
        (
            "publish",
            format!(
                r#"{{"channel":"chat:a","data":1,"idempotency_key":"{}"}}"#,
                "k".repeat(300)
            ),
            400,
            "bad_request",
        ),
        (
            "send_to_user",
            r#"{"user":"","data":1}"#.into(),
            400,
            "invalid_user",
        ),
        (
            "send_to_user",
            r#"{"user":"a b","data":1}"#.into(),
            400,
            "invalid_user",
        ),
        (
            "disconnect_user",
            r#"{"user":"alice","code":1000}"#.into(),
            400,
            "bad_request",
        ),
        (
            "disconnect_user",
            r#"{"user":"alice","code":70000}"#.into(),
            400,
            "bad_request",
        ),
        (
            "disconnect_user",
            format!(r#"{{"user":"alice","reason":"{}"}}"#, "r".repeat(124)),
            400,
            "bad_request",
        ),
        (
            "unsubscribe_user",
            r##"{"user":"alice","channel":"#alice"}"##.into(),
            400,
            "bad_request",
        ),
        (
            "unsubscribe_user",
            r#"{"user":"alice","channel":"nowhere:x"}"#.into(),
            400,
            "unknown_namespace",
        ),
        (
            "presence",
            r#"{"channel":"quiet:a"}"#.into(),
            400,
            "not_available",
        ),
        (
            "presence_stats",
            r#"{"channel":"quiet:a"}"#.into(),
            400,
            "not_available",
        ),
        (
            "history",
            r#"{"channel":"quiet:a"}"#.into(),
            400,
            "not_available",
        ),
        (
            "history",
            r#"{"channel":"chat:a","limit":100000}"#.into(),
            400,
            "bad_request",
        ),
        (
            "history",
            r#"{"channel":"chat:a","limit":-1}"#.into(),
            400,
            "bad_request",
        ),
        (
            "history",
            r#"{"channel":"chat:a","since":{"offset":1}}"#.into(),
            400,
            "bad_request",
        ),
        (
            "history",
            r#"{"channel":"chat:a","reverse":"yes"}"#.into(),
            400,
            "bad_request",
        ),
        ("channels", r#"{"limit":100000}"#.into(), 400, "bad_request"),
        (
            "broadcast",
            r#"{"channels":"chat:a","data":1}"#.into(),
            400,
            "bad_request",
        ),
        ("presence", "".into(), 400, "bad_request"),
    ];
    for (call, body, status, code) in json_cases {
        let reply = api
            .send(
                http::Method::POST,
                &format!("/api/{call}"),
                &[("content-type", "application/json")],
                body.clone().into_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.error_code()),
            (status, code),
            "{call} {}: {}",
            &body[..body.len().min(80)],
            reply.body
        );
        assert!(
            !reply.body["error"]["message"].as_str().unwrap().is_empty(),
            "{}",
            reply.body
        );
        assert_eq!(reply.headers["content-type"], "application/json");
    }
    let other = [
        (
            http::Method::POST,
            "/api/publish",
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            http::Method::POST,
            "/api/publish",
            Some("application/x-www-form-urlencoded"),
            415,
            "unsupported_media_type",
        ),
        (
            http::Method::GET,
            "/api/info",
            None,
            405,
            "method_not_allowed",
        ),
        (
            http::Method::POST,
            "/api/no_such_call",
            None,
            404,
            "not_found",
        ),
        (http::Method::POST, "/api", None, 404, "not_found"),
    ];
    for (method, path, content_type, status, code) in other {
        let headers: Vec<(&str, &str)> =
            content_type.iter().map(|c| ("content-type", *c)).collect();
        let reply = api
            .send(
                method.clone(),
                path,
                &headers,
                br#"{"channel":"chat:a","data":1}"#.to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.error_code()),
            (status, code),
            "{method} {path}: {}",
            reply.body
        );
    }
    // Nothing above reached a channel.
    let history = api
        .ok("history", json!({"channel": "chat:a"}))
        .await
        .unwrap();
    assert_eq!(history["publications"], json!([]));
}

#[tokio::test]
async fn personal_channels_disabled_is_said_plainly() {
    let mut s = Settings::for_test();
    s.namespaces.personal.enabled = false;
    let server = TestServer::start(s).await;
    let reply = api(&server)
        .call("send_to_user", json!({"user": "alice", "data": 1}))
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.error_code()),
        (400, "personal_channels_disabled")
    );
}

#[tokio::test]
async fn a_separate_api_listener_keeps_the_api_off_the_client_port() {
    let server = TestServer::start_with(Settings::for_test(), BrokerConfig::default(), true).await;
    assert_ne!(server.api_addr, server.addr);
    let on_api = Http::new(server.api_addr, Some(API_KEY));
    assert_eq!(on_api.call("info", json!({})).await.unwrap().status, 200);
    let on_client = Http::new(server.addr, Some(API_KEY));
    let reply = on_client.call("info", json!({})).await.unwrap();
    assert_eq!(reply.status, 404, "{}", reply.body);
    let mut grpc = switchboard_testkit::api::grpc(server.addr, Some(API_KEY))
        .await
        .unwrap();
    assert!(
        grpc.info(switchboard_proto::api::v1::Empty {})
            .await
            .is_err()
    );
    // The client port still serves clients, and the API port does not.
    let mut c = server.client().await;
    c.subscribe("chat:x").await.unwrap();
    assert!(
        Client::connect(&format!("ws://{}/ws", server.api_addr))
            .await
            .is_err()
    );
}
