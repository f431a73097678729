//! The Pusher-compatible door (docs/pusher.md) against a gateway and broker
//! in this process: pysher from PyPI for public, private and presence
//! channels and client events, the official `pusher` server SDK for the
//! HTTP API and authorization signatures, and raw frames for every error
//! path.
//!
//! Needs python3 with venv and pip; the pinned packages
//! (tests/pusher/requirements.txt) go into target/pusher-venv once.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use serde_json::{Value, json};
use switchboard_gateway::pusher::PusherApp;
use switchboard_testkit::{
    TestServer,
    certificates::ClusterCa,
    client::Client,
    cluster::{scenario_config, scenario_config_with},
    process::{Process, free_port},
    pusher::{self, APP_ID, KEY, PusherClient},
    python,
    settings::API_KEY,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const REQUIREMENTS: &str = include_str!("pusher/requirements.txt");

/// target/, found from this build's binary (target/<profile>/switchboard).
fn target_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in target/<profile>/")
        .to_owned()
}

async fn run(program: &Path, args: &[&str], within: Duration) -> Output {
    python::run(program, args, Path::new(ROOT), within).await
}

/// The virtualenv with tests/pusher/requirements.txt, made once.
async fn venv() -> PathBuf {
    let dir = target_dir().join("pusher-venv");
    python::venv(
        &dir,
        Path::new(ROOT),
        "tests/pusher/requirements.txt",
        REQUIREMENTS,
    )
    .await
}

/// The dev app of the embedded default config (config/dev.toml).
const DEV_APP_ID: &str = "1";
const DEV_KEY: &str = "switchboard-dev-key";
const DEV_SECRET: &str = "switchboard-dev-secret";
const DEV_API_KEY: &str = "switchboard-dev-api-key";

/// `switchboard dev` with its embedded default config, as users run it.
async fn dev() -> Process {
    Process::start(Path::new(BIN), &["dev", "--listen", "127.0.0.1:0"])
        .await
        .unwrap()
}

async fn server() -> TestServer {
    TestServer::start(pusher::settings(vec![pusher::app()])).await
}

async fn server_with(app: PusherApp) -> TestServer {
    TestServer::start(pusher::settings(vec![app])).await
}

#[tokio::test]
async fn pysher_public_private_presence_and_client_events() {
    let python = venv().await;
    let server = dev().await;
    let port = server.addr.port().to_string();
    let out = run(
        &python,
        &[
            "tests/pusher/pysher_check.py",
            "127.0.0.1",
            &port,
            DEV_KEY,
            DEV_SECRET,
            DEV_APP_ID,
            DEV_API_KEY,
        ],
        Duration::from_secs(120),
    )
    .await;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(report.contains("pysher: all checks ok"), "{report}");
    assert_eq!(report.lines().filter(|l| l.starts_with("ok - ")).count(), 5);
}

/// The official server SDK for every HTTP API call, channel and user
/// authorization and the API's refusals (tests/pusher/sdk_check.py).
#[tokio::test]
async fn pusher_server_sdk_every_api_call_and_authorization() {
    let python = venv().await;
    let server = dev().await;
    let port = server.addr.port().to_string();
    let out = run(
        &python,
        &[
            "tests/pusher/sdk_check.py",
            "127.0.0.1",
            &port,
            DEV_KEY,
            DEV_SECRET,
            DEV_APP_ID,
            DEV_API_KEY,
        ],
        Duration::from_secs(120),
    )
    .await;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(report.contains("sdk: all checks ok"), "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok - ")).count(),
        10
    );
}

/// Webhooks (docs/pusher.md, "Webhooks") from `switchboard dev` with the
/// embedded config plus one endpoint: pysher makes the events, the official
/// SDK verifies every request's signature, and the endpoint refuses the
/// first request so that its events must come again
/// (tests/pusher/webhook_check.py).
#[tokio::test]
async fn webhooks_are_signed_retried_and_sent_once_per_event() {
    let python = venv().await;
    let hook_port = free_port().unwrap();
    let hook_url = format!("http://127.0.0.1:{hook_port}/hooks");
    let path = scenario_config_with("webhooks", pusher::with_webhook(&hook_url)).unwrap();
    let server = Process::start(
        Path::new(BIN),
        &["dev", "--listen", "127.0.0.1:0", "--config", &path],
    )
    .await
    .unwrap();
    let (port, hook_port) = (server.addr.port().to_string(), hook_port.to_string());
    let out = run(
        &python,
        &[
            "tests/pusher/webhook_check.py",
            "127.0.0.1",
            &port,
            DEV_KEY,
            DEV_SECRET,
            DEV_APP_ID,
            &hook_port,
        ],
        Duration::from_secs(120),
    )
    .await;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(report.contains("webhooks: all checks ok"), "{report}");
    assert_eq!(report.lines().filter(|l| l.starts_with("ok - ")).count(), 5);
}

#[tokio::test]
async fn connection_established_carries_socket_id_and_activity_timeout() {
    let server = server().await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    let (a, b) = c
        .socket_id
        .split_once('.')
        .expect("socket id is two numbers");
    assert!(
        a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok(),
        "{}",
        c.socket_id
    );
    assert_eq!(c.activity_timeout, 120);
    c.send("pusher:ping", None, json!({})).await.unwrap();
    let pong = c.event("pusher:pong", None).await.unwrap();
    assert_eq!(pong["data"], "{}");
}

#[tokio::test]
async fn unknown_app_key_gets_4001_and_no_reconnect() {
    let server = server().await;
    let mut c = Client::connect(&pusher::url(server.addr, "no-such-key"))
        .await
        .unwrap();
    let error = c.next().await.unwrap();
    assert_eq!(error["event"], "pusher:error");
    assert_eq!(error["data"]["code"], 4001);
    assert_eq!(c.closed().await.unwrap().code, Some(4001));
}

#[tokio::test]
async fn protocol_version_is_checked() {
    let server = server().await;
    let base = format!("ws://{}/app/{KEY}", server.addr);
    let c = Client::connect(&base).await.unwrap();
    assert_eq!(c.closed().await.unwrap().code, Some(4008));
    let c = Client::connect(&format!("{base}?protocol=4"))
        .await
        .unwrap();
    assert_eq!(c.closed().await.unwrap().code, Some(4007));
}

#[tokio::test]
async fn bad_signatures_are_refused_per_channel() {
    let server = server().await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    // Signed for another socket.
    let auth = pusher::auth("1.1", "private-a", None);
    c.send(
        "pusher:subscribe",
        None,
        json!({"channel": "private-a", "auth": auth}),
    )
    .await
    .unwrap();
    let answer = c.answer("private-a").await.unwrap();
    assert_eq!(answer["event"], "pusher:subscription_error");
    assert_eq!(answer["data"]["type"], "AuthError");
    assert_eq!(answer["data"]["status"], 401);
    // No auth at all.
    c.send("pusher:subscribe", None, json!({"channel": "private-b"}))
        .await
        .unwrap();
    assert_eq!(c.answer("private-b").await.unwrap()["data"]["status"], 401);
    // Presence data other than what was signed.
    let signed = json!({"user_id": "alice"}).to_string();
    let auth = pusher::auth(&c.socket_id, "presence-a", Some(&signed));
    let forged = json!({"user_id": "admin"}).to_string();
    c.send(
        "pusher:subscribe",
        None,
        json!({"channel": "presence-a", "auth": auth, "channel_data": forged}),
    )
    .await
    .unwrap();
    assert_eq!(
        c.answer("presence-a").await.unwrap()["data"]["type"],
        "AuthError"
    );
    // Another app's key.
    let auth = format!("other-key:{}", auth.split_once(':').unwrap().1);
    c.send(
        "pusher:subscribe",
        None,
        json!({"channel": "private-c", "auth": auth}),
    )
    .await
    .unwrap();
    assert_eq!(
        c.answer("private-c").await.unwrap()["data"]["type"],
        "AuthError"
    );
    // The connection is still good.
    let ok = c.subscribe("private-d", None).await.unwrap();
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
}

#[tokio::test]
async fn client_events_are_refused_where_pusher_refuses_them() {
    let server = server().await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    c.subscribe("public", None).await.unwrap();
    c.send("client-x", Some("public"), json!({})).await.unwrap();
    let e = c.event("pusher:error", None).await.unwrap();
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("private and presence"),
        "{e}"
    );
    // Nor on an encrypted channel (pusher-js would not send it).
    c.subscribe("private-encrypted-a", None).await.unwrap();
    c.send("client-x", Some("private-encrypted-a"), json!({}))
        .await
        .unwrap();
    let e = c.event("pusher:error", None).await.unwrap();
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("private and presence"),
        "{e}"
    );
    // Not subscribed.
    c.send("client-x", Some("private-elsewhere"), json!({}))
        .await
        .unwrap();
    let e = c.event("pusher:error", None).await.unwrap();
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("not subscribed"),
        "{e}"
    );
    // Larger than max_event_bytes (10 KiB).
    c.subscribe("private-a", None).await.unwrap();
    let big = "x".repeat(11 * 1024);
    c.send("client-big", Some("private-a"), json!(big))
        .await
        .unwrap();
    let e = c.event("pusher:error", None).await.unwrap();
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 10240"),
        "{e}"
    );
}

#[tokio::test]
async fn client_events_off_for_the_app_are_refused() {
    let server = server_with(PusherApp {
        enable_client_messages: false,
        ..pusher::app()
    })
    .await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    c.subscribe("private-a", None).await.unwrap();
    c.send("client-x", Some("private-a"), json!({}))
        .await
        .unwrap();
    let e = c.event("pusher:error", None).await.unwrap();
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("not enabled"),
        "{e}"
    );
}

#[tokio::test]
async fn client_events_are_rate_limited_with_4301() {
    let server = server_with(PusherApp {
        client_events_per_second: 2,
        ..pusher::app()
    })
    .await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    c.subscribe("private-a", None).await.unwrap();
    for _ in 0..3 {
        c.send("client-x", Some("private-a"), json!({}))
            .await
            .unwrap();
    }
    let e = c.event("pusher:error", None).await.unwrap();
    assert_eq!(e["data"]["code"], 4301, "{e}");
}

#[tokio::test]
async fn presence_client_events_carry_the_sender_and_skip_it() {
    let server = server().await;
    let mut a = PusherClient::connect(server.addr, KEY).await.unwrap();
    let mut b = PusherClient::connect(server.addr, KEY).await.unwrap();
    a.subscribe("presence-r", Some(json!({"user_id": "alice"})))
        .await
        .unwrap();
    b.subscribe(
        "presence-r",
        Some(json!({"user_id": 42, "user_info": {"n": 1}})),
    )
    .await
    .unwrap();
    let added = a
        .event("pusher_internal:member_added", Some("presence-r"))
        .await
        .unwrap();
    let added: Value = serde_json::from_str(added["data"].as_str().unwrap()).unwrap();
    assert_eq!(added, json!({"user_id": "42", "user_info": {"n": 1}}));
    b.send("client-hi", Some("presence-r"), json!({"x": 1}))
        .await
        .unwrap();
    let hi = a.event("client-hi", Some("presence-r")).await.unwrap();
    assert_eq!(hi["user_id"], "42");
    assert_eq!(hi["data"], json!({"x": 1}));
    // b gets a's answer, and nothing of its own before it.
    a.send("client-back", Some("presence-r"), json!(1))
        .await
        .unwrap();
    let next = b
        .client
        .wait_for(|f| {
            f["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("client-"))
        })
        .await
        .unwrap();
    assert_eq!(next["event"], "client-back");
}

#[tokio::test]
async fn too_many_channels_are_refused() {
    let mut settings = pusher::settings(vec![pusher::app()]);
    settings.gateway.limits.max_channels_per_connection = 2;
    let server = TestServer::start(settings).await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    c.subscribe("a", None).await.unwrap();
    c.subscribe("b", None).await.unwrap();
    let third = c.subscribe("c", None).await.unwrap();
    assert_eq!(third["event"], "pusher:subscription_error");
    assert_eq!(third["data"]["type"], "LimitReached");
}

/// The native connections' channel quota holds for Pusher connections
/// too: subscribing creates channels at brokers (docs/security.md).
#[tokio::test]
async fn new_channels_per_interval_are_limited() {
    let mut settings = pusher::settings(vec![pusher::app()]);
    settings.gateway.limits.max_channels_per_interval = 2;
    let server = TestServer::start(settings).await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    for ch in ["a", "b"] {
        let ok = c.subscribe(ch, None).await.unwrap();
        assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    }
    let third = c.subscribe("c", None).await.unwrap();
    assert_eq!(third["event"], "pusher:subscription_error", "{third}");
    assert_eq!(third["data"]["type"], "LimitReached");
    assert_eq!(third["data"]["status"], 429);
    let again = c.subscribe("a", None).await.unwrap();
    assert_eq!(again["event"], "pusher_internal:subscription_succeeded");
}

#[tokio::test]
async fn invalid_channel_names_are_refused() {
    let server = server().await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    for name in ["a:b", "a;b", &"x".repeat(165)] {
        let answer = c.subscribe(name, None).await.unwrap();
        assert_eq!(answer["data"]["type"], "InvalidChannel", "{name}");
    }
}

#[tokio::test]
async fn over_capacity_gets_4100() {
    let server = server_with(PusherApp {
        max_connections: 1,
        ..pusher::app()
    })
    .await;
    let _first = PusherClient::connect(server.addr, KEY).await.unwrap();
    let mut second = Client::connect(&pusher::url(server.addr, KEY))
        .await
        .unwrap();
    assert_eq!(second.next().await.unwrap()["data"]["code"], 4100);
    assert_eq!(second.closed().await.unwrap().code, Some(4100));
}

#[tokio::test]
async fn silent_clients_are_pinged_then_closed_with_4201() {
    let mut settings = pusher::settings(vec![pusher::app()]);
    settings.pusher.activity_timeout = Duration::from_secs(1);
    settings.pusher.pong_timeout = Duration::from_millis(500);
    let server = TestServer::start(settings).await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    c.event("pusher:ping", None).await.unwrap();
    let closed = c.client.closed().await.unwrap();
    assert_eq!(closed.code, Some(4201));
    // One that answers stays.
    let mut d = PusherClient::connect(server.addr, KEY).await.unwrap();
    for _ in 0..2 {
        d.event("pusher:ping", None).await.unwrap();
        d.send("pusher:pong", None, json!({})).await.unwrap();
    }
    d.send("pusher:ping", None, json!({})).await.unwrap();
    d.event("pusher:pong", None).await.unwrap();
}

#[tokio::test]
async fn signin_checks_its_signature() {
    let server = server().await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    let user_data = json!({"id": "u1", "user_info": {"n": 1}}).to_string();
    let message = switchboard_gateway::pusher::signature::signin_message(&c.socket_id, &user_data);
    let auth = format!(
        "{KEY}:{}",
        switchboard_gateway::pusher::signature::sign(pusher::SECRET, &message)
    );
    c.send(
        "pusher:signin",
        None,
        json!({"auth": auth, "user_data": user_data}),
    )
    .await
    .unwrap();
    let ok = c.event("pusher:signin_success", None).await.unwrap();
    assert_eq!(ok["data"]["user_data"], user_data.as_str());
    c.send(
        "pusher:signin",
        None,
        json!({"auth": format!("{KEY}:00"), "user_data": user_data}),
    )
    .await
    .unwrap();
    let closed = c.client.closed().await.unwrap();
    assert_eq!(closed.code, Some(4009));
    assert_eq!(closed.frames.last().unwrap()["data"]["code"], 4009);
}

#[tokio::test]
async fn apps_never_see_each_others_channels() {
    let other = PusherApp {
        id: "20".into(),
        key: "other-key".into(),
        secret: "other-secret".into(),
        ..pusher::app()
    };
    let server = TestServer::start(pusher::settings(vec![pusher::app(), other])).await;
    let mut mine = PusherClient::connect(server.addr, KEY).await.unwrap();
    let mut theirs = PusherClient::connect(server.addr, "other-key")
        .await
        .unwrap();
    mine.subscribe("news", None).await.unwrap();
    theirs.subscribe("news", None).await.unwrap();
    let api = switchboard_testkit::api::Http::new(server.api_addr, Some(API_KEY));
    for (app, event) in [("20", "theirs"), (APP_ID, "mine")] {
        api.ok(
            "publish",
            json!({"channel": format!("pusher.{app}:news"), "data": {"event": event, "data": "{}"}}),
        )
        .await
        .unwrap();
    }
    let first = mine
        .client
        .wait_for(|f| f["channel"] == "news")
        .await
        .unwrap();
    assert_eq!(first["event"], "mine");
    let first = theirs
        .client
        .wait_for(|f| f["channel"] == "news")
        .await
        .unwrap();
    assert_eq!(first["event"], "theirs");
}

#[tokio::test]
async fn a_draining_gateway_closes_with_4200_so_clients_reconnect_at_once() {
    let server = server().await;
    let c = PusherClient::connect(server.addr, KEY).await.unwrap();
    server.shutdown.cancel();
    let closed = c.client.closed().await.unwrap();
    assert_eq!(closed.code, Some(4200));
    assert_eq!(closed.frames.last().unwrap()["data"]["code"], 4200);
}

#[tokio::test]
async fn presence_limits_refuse_the_subscription() {
    let server = server_with(PusherApp {
        max_presence_members: 1,
        max_presence_user_info_bytes: 16,
        ..pusher::app()
    })
    .await;
    let mut a = PusherClient::connect(server.addr, KEY).await.unwrap();
    let mut b = PusherClient::connect(server.addr, KEY).await.unwrap();
    let big = json!({"user_id": "a", "user_info": {"bio": "x".repeat(20)}});
    let answer = a.subscribe("presence-r", Some(big)).await.unwrap();
    assert_eq!(answer["data"]["type"], "LimitReached");
    assert_eq!(answer["data"]["status"], 413);
    a.subscribe("presence-r", Some(json!({"user_id": "a"})))
        .await
        .unwrap();
    let full = b
        .subscribe("presence-r", Some(json!({"user_id": "b"})))
        .await
        .unwrap();
    assert_eq!(full["event"], "pusher:subscription_error");
    assert_eq!(full["data"]["status"], 403);
}

/// docs/pusher.md: a native client shares an app's channel with a token
/// claim naming it, and gets what the HTTP API triggers; without the claim
/// it is refused.
#[tokio::test]
async fn native_clients_share_an_apps_channel_only_with_a_claim() {
    let server = server().await;
    let native = format!("pusher.{APP_ID}:news");
    let token = switchboard_testkit::settings::issuer().issue(
        "nat",
        Duration::from_secs(60),
        Some(vec![native.clone()]),
    );
    let mut with = Client::connect(&format!("{}?token={token}", server.url()))
        .await
        .unwrap();
    with.subscribe(&native).await.unwrap();
    let mut without = Client::connect(&server.url()).await.unwrap();
    let refused = without
        .request(json!({"type": "subscribe", "channel": native}))
        .await
        .unwrap();
    assert!(refused.get("error").is_some(), "{refused}");
    let reply = pusher::trigger(
        server.addr,
        (APP_ID, KEY, pusher::SECRET),
        &json!({"name": "e", "channel": "news", "data": "{\"n\":1}"}),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let m = with.message(&native).await.unwrap();
    assert_eq!(m["data"], json!({"event": "e", "data": "{\"n\":1}"}));
}

/// The cluster: three brokers, two gateways given their addresses. A
/// Pusher client on gateway 1 receives what the HTTP API triggers on
/// gateway 2, on channels owned by every broker, and presence members are
/// seen across gateways.
/// Three brokers and two gateways given their addresses, over mutual TLS,
/// every node on `config`: (brokers, gateways).
async fn pusher_cluster(config: &str) -> (Vec<Process>, Vec<Process>) {
    let bin = Path::new(BIN);
    let mut brokers = Vec::new();
    for i in 1..=3 {
        let port = free_port().unwrap();
        let grpc = format!("127.0.0.1:{port}");
        let name = format!("b{i}");
        let tls = ClusterCa::shared().broker_args(&name);
        let mut args = vec![
            "node",
            "--replication-factor",
            "1",
            "--name",
            &name,
            "--grpc",
            &grpc,
            "--http",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--config",
            config,
        ];
        args.extend(tls.iter().map(String::as_str));
        let p = Process::start_announcing(bin, &args, "grpc://")
            .await
            .unwrap();
        brokers.push((name, port, p));
    }
    let list = brokers
        .iter()
        .map(|(n, port, _)| format!("{n}=127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut gateways = Vec::new();
    for name in ["g1", "g2"] {
        let tls = ClusterCa::shared().gateway_args(name);
        let mut args = vec![
            "gateway",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--broker",
            &list,
            "--config",
            config,
        ];
        args.extend(tls.iter().map(String::as_str));
        gateways.push(Process::start(bin, &args).await.unwrap());
    }
    (brokers.into_iter().map(|(_, _, p)| p).collect(), gateways)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_pusher_client_on_one_gateway_gets_api_events_from_another() {
    let config = scenario_config("pusher").unwrap();
    let (_brokers, gateways) = pusher_cluster(&config).await;
    let (g1, g2) = (gateways[0].addr, gateways[1].addr);
    let dev = (DEV_APP_ID, DEV_KEY, DEV_SECRET);
    let mut c = PusherClient::connect(g1, DEV_KEY).await.unwrap();
    // Enough channels that every broker owns some.
    let channels: Vec<String> = (0..12).map(|i| format!("room-{i}")).collect();
    for ch in &channels {
        let ok = c.subscribe(ch, None).await.unwrap();
        assert_eq!(
            ok["event"], "pusher_internal:subscription_succeeded",
            "{ok}"
        );
    }
    let reply = pusher::trigger(
        g2,
        dev,
        &json!({"name": "hello", "channels": channels, "data": "{}"}),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    for ch in &channels {
        c.event("hello", Some(ch)).await.unwrap();
    }
    // Presence across gateways (with signatures from the dev secret).
    let mut a = PusherClient::connect(g1, DEV_KEY).await.unwrap();
    let mut b = PusherClient::connect(g2, DEV_KEY).await.unwrap();
    let sub = |socket: &str, user: &str| {
        let data = json!({"user_id": user}).to_string();
        let message = switchboard_gateway::pusher::signature::channel_message(
            socket,
            "presence-lobby",
            Some(&data),
        );
        let sig = switchboard_gateway::pusher::signature::sign(DEV_SECRET, &message);
        json!({"channel": "presence-lobby", "auth": format!("{DEV_KEY}:{sig}"), "channel_data": data})
    };
    let frame = sub(&a.socket_id, "ann");
    a.send("pusher:subscribe", None, frame).await.unwrap();
    a.answer("presence-lobby").await.unwrap();
    let frame = sub(&b.socket_id, "bea");
    b.send("pusher:subscribe", None, frame).await.unwrap();
    let members = b.answer("presence-lobby").await.unwrap();
    let members: Value = serde_json::from_str(members["data"].as_str().unwrap()).unwrap();
    assert_eq!(members["presence"]["count"], 2, "{members}");
    let added = a
        .event("pusher_internal:member_added", Some("presence-lobby"))
        .await
        .unwrap();
    assert!(added["data"].as_str().unwrap().contains("bea"), "{added}");
}

#[tokio::test]
async fn cache_channels_replay_their_last_event_to_new_subscribers() {
    let server = server().await;
    let mut a = PusherClient::connect(server.addr, KEY).await.unwrap();
    a.subscribe("cache-news", None).await.unwrap();
    let miss = a.client.next().await.unwrap();
    assert_eq!(miss["event"], "pusher:cache_miss");
    assert_eq!(miss["channel"], "cache-news");
    for n in 1..=2 {
        let body =
            json!({"name": "headline", "channel": "cache-news", "data": format!("{{\"n\":{n}}}")});
        let reply = pusher::trigger(server.addr, (APP_ID, KEY, pusher::SECRET), &body)
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        a.event("headline", Some("cache-news")).await.unwrap();
    }
    let mut b = PusherClient::connect(server.addr, KEY).await.unwrap();
    let ok = b.subscribe("cache-news", None).await.unwrap();
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    let replayed = b.client.next().await.unwrap();
    assert_eq!(replayed["event"], "headline");
    assert_eq!(replayed["data"], "{\"n\":2}");
    // A private cache channel keeps its own.
    let ok = b.subscribe("private-cache-x", None).await.unwrap();
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(b.client.next().await.unwrap()["event"], "pusher:cache_miss");
}

#[tokio::test]
async fn frames_over_the_gateway_rate_are_dropped_with_an_error() {
    let mut settings = pusher::settings(vec![pusher::app()]);
    settings.gateway.limits.rate_per_second = 1.0;
    settings.gateway.limits.rate_burst = 3;
    let server = TestServer::start(settings).await;
    let mut c = PusherClient::connect(server.addr, KEY).await.unwrap();
    for _ in 0..5 {
        c.send("pusher:ping", None, json!({})).await.unwrap();
    }
    let e = c.event("pusher:error", None).await.unwrap();
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit"),
        "{e}"
    );
    assert!(e["data"]["code"].is_null(), "{e}");
}

/// Webhooks in the cluster are sent by each channel's owner: a channel
/// that clients on both gateways join is occupied once and vacated once,
/// whichever broker owns it, and every request is signed with the app's
/// secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_webhooks_are_sent_once_per_event_by_the_owner() {
    let hooks = switchboard_testkit::webhook::Receiver::start()
        .await
        .unwrap();
    let config = scenario_config_with("pusher-hooks", pusher::with_webhook(&hooks.url)).unwrap();
    let (_brokers, gateways) = pusher_cluster(&config).await;
    // Enough channels that every broker owns some.
    let channels: Vec<String> = (0..12).map(|i| format!("room-{i}")).collect();
    let mut clients = Vec::new();
    for g in &gateways {
        let mut c = PusherClient::connect(g.addr, DEV_KEY).await.unwrap();
        for ch in &channels {
            let ok = c.subscribe(ch, None).await.unwrap();
            assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
        }
        clients.push(c);
    }
    let count = |events: &[Value], name: &str, ch: &str| {
        events
            .iter()
            .filter(|e| e["name"] == name && e["channel"] == ch)
            .count()
    };
    let all = |name: &'static str| {
        let channels = channels.clone();
        move |events: &[Value]| channels.iter().all(|ch| count(events, name, ch) >= 1)
    };
    hooks
        .wait_for(Duration::from_secs(20), all("channel_occupied"))
        .await
        .unwrap();
    drop(clients);
    let events = hooks
        .wait_for(Duration::from_secs(20), all("channel_vacated"))
        .await
        .unwrap();
    for ch in &channels {
        assert_eq!(
            count(&events, "channel_occupied", ch),
            1,
            "{ch}: {events:?}"
        );
        assert_eq!(count(&events, "channel_vacated", ch), 1, "{ch}: {events:?}");
    }
    for r in hooks.requests() {
        assert_eq!(r.key, DEV_KEY);
        let expected = switchboard_gateway::pusher::signature::sign(DEV_SECRET, &r.body);
        assert_eq!(r.signature, expected, "{}", r.body);
    }
}

/// The clients nobody on this project wrote, against the three-broker
/// cluster: pysher and the official SDK on gateway 1, and the webhook check
/// (pysher on gateway 2, the SDK verifying what the owners send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_pysher_sdk_and_webhooks_pass_as_against_dev() {
    let python = venv().await;
    let hook_port = free_port().unwrap();
    let hook_url = format!("http://127.0.0.1:{hook_port}/hooks");
    let config = scenario_config_with("pusher-clients", pusher::with_webhook(&hook_url)).unwrap();
    let (_brokers, gateways) = pusher_cluster(&config).await;
    let (g1, g2) = (
        gateways[0].addr.port().to_string(),
        gateways[1].addr.port().to_string(),
    );
    let hook_port = hook_port.to_string();
    // The webhook check first: it counts every event its endpoint gets, and
    // the other checks' events would be queued for it meanwhile.
    let checks = [
        (
            "tests/pusher/webhook_check.py",
            &g2,
            hook_port.as_str(),
            "webhooks: all checks ok",
        ),
        (
            "tests/pusher/pysher_check.py",
            &g1,
            DEV_API_KEY,
            "pysher: all checks ok",
        ),
        (
            "tests/pusher/sdk_check.py",
            &g1,
            DEV_API_KEY,
            "sdk: all checks ok",
        ),
    ];
    for (script, port, last, done) in checks {
        let args = [
            script,
            "127.0.0.1",
            port,
            DEV_KEY,
            DEV_SECRET,
            DEV_APP_ID,
            last,
        ];
        let out = run(&python, &args, Duration::from_secs(120)).await;
        let report = String::from_utf8_lossy(&out.stdout);
        println!("{report}");
        assert!(report.contains(done), "{script}: {report}");
    }
}
