//! Each limit, hit on purpose over real sockets.

mod common;

use std::time::Duration;

use common::{Client, ForTest, Settings, TestServer, WAIT};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test]
async fn rate_limit_answers_with_errors_and_keeps_the_connection() {
    let mut s = Settings::for_test();
    s.gateway.limits.rate_per_second = 0.5;
    s.gateway.limits.rate_burst = 3;
    let server = TestServer::start(s).await;
    let mut c = server.client().await;
    for i in 0..5 {
        c.send(json!({"type": "ping", "id": i})).await.unwrap();
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..5 {
        let f = c.next().await.unwrap();
        match f["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(
                    (f["error"].as_str(), f["code"].as_u64()),
                    (Some("Rate limit exceeded"), Some(110))
                );
                assert!(f["id"].is_number(), "the id is echoed: {f}");
                limited += 1;
            }
            _ => panic!("unexpected {f}"),
        }
    }
    assert_eq!((pongs, limited), (3, 2));
}

#[tokio::test]
async fn rate_limit_can_close_with_4008() {
    let mut s = Settings::for_test();
    s.gateway.limits.rate_per_second = 0.5;
    s.gateway.limits.rate_burst = 2;
    s.gateway.limits.close_on_rate_limit = true;
    let server = TestServer::start(s).await;
    let mut c = server.client().await;
    for i in 0..3 {
        c.send(json!({"type": "ping", "id": i})).await.unwrap();
    }
    let closed = c.closed().await.unwrap();
    assert_eq!(closed.code, Some(4008));
    assert!(
        closed
            .frames
            .iter()
            .any(|f| f["error"] == "Rate limit exceeded")
    );
    assert_eq!(closed.disconnect().unwrap()["reconnect"], true);
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_message_bytes = 1024;
    let server = TestServer::start(s).await;
    let mut ok = server.client().await;
    ok.publish("big:a", json!("x".repeat(900))).await.unwrap();
    let mut c = server.client().await;
    c.send(json!({"type": "publish", "channel": "big:a", "data": "x".repeat(2000)}))
        .await
        .unwrap();
    let closed = c.closed().await.unwrap();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(1009), "message too big")
    );
}

#[tokio::test]
async fn channels_per_connection_are_capped() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_channels_per_connection = 2;
    let server = TestServer::start(s).await;
    let mut c = server.user("capped").await; // the personal channel does not count
    c.subscribe("a").await.unwrap();
    c.subscribe("b").await.unwrap();
    let e = c
        .request(json!({"type": "subscribe", "channel": "c"}))
        .await
        .unwrap();
    assert_eq!(
        (e["code"].as_u64(), e["error"].as_str()),
        (
            Some(106),
            Some("too many channels: at most 2 per connection")
        )
    );
    c.ok(json!({"type": "unsubscribe", "channel": "a"}))
        .await
        .unwrap();
    c.subscribe("c").await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_maximum_get_503() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_connections = 2;
    let server = TestServer::start(s).await;
    let first = server.client().await;
    let _second = server.client().await;
    let err = Client::connect(&server.url())
        .await
        .err()
        .expect("third is refused");
    assert!(err.to_string().contains("503"), "{err}");
    first.close().await.unwrap();
    // The slot frees once the first connection's task has ended.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if Client::connect(&server.url()).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn handshake_must_complete_in_time() {
    let mut s = Settings::for_test();
    s.gateway.limits.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(s).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server gives up on the half-sent request and closes the socket.
    let read = tokio::time::timeout(WAIT, raw.read_to_end(&mut buf))
        .await
        .expect("server closed the socket");
    assert!(
        read.is_err() || String::from_utf8_lossy(&buf).contains("408") || buf.is_empty(),
        "{buf:?}"
    );
}

#[tokio::test]
async fn silent_peers_are_dropped_after_the_idle_timeout() {
    let mut s = Settings::for_test();
    s.gateway.limits.ping_interval = Duration::from_millis(100);
    s.gateway.limits.idle_timeout = Duration::from_millis(300);
    let server = TestServer::start(s).await;
    let lively = server.client().await;
    let c = server.client().await;
    // This client does not read, so it never answers the server's pings:
    // to the server it is a dead peer. Being silent is the scenario.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let closed = c.closed().await.unwrap();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(4009), "idle timeout")
    );
    // A client that reads (and so answers pings) stays.
    let mut lively = lively;
    let pong = lively.request(json!({"type": "ping"})).await;
    assert!(pong.is_err() || pong.unwrap()["type"] == "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_without_costing_others_a_message() {
    let mut s = Settings::for_test();
    // Large enough for a reading client to absorb a scheduling burst; the
    // client that never reads overflows it once its socket buffers are full.
    s.gateway.limits.outbound_queue = 256;
    s.gateway.limits.write_timeout = Duration::from_secs(30);
    s.gateway.limits.rate_per_second = 100_000.0;
    s.gateway.limits.rate_burst = 100_000;
    let server = TestServer::start(s).await;
    const N: u64 = 1500;
    let payload = "p".repeat(16 * 1024);

    let mut slow = server.client().await;
    slow.subscribe("firehose").await.unwrap();
    let mut healthy = server.client().await;
    healthy.subscribe("firehose").await.unwrap();
    let reader = tokio::spawn(async move {
        let mut offsets = Vec::new();
        while offsets.len() < N as usize {
            let m = healthy.message("firehose").await.unwrap();
            offsets.push(m["offset"].as_u64().unwrap());
        }
        offsets
    });
    let mut publisher = server.client().await;
    for i in 0..N {
        publisher
            .send(json!({"type": "publish", "channel": "firehose", "data": {"i": i, "p": payload}}))
            .await
            .unwrap();
    }
    // The healthy subscriber gets every publication, in order.
    let offsets = reader.await.unwrap();
    assert_eq!(offsets, (1..=N).collect::<Vec<_>>());
    // The one that never read is told why it was dropped.
    let closed = slow.closed().await.unwrap();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(4005), "slow consumer")
    );
    let received = closed
        .frames
        .iter()
        .filter(|f| f["type"] == "message")
        .count() as u64;
    assert!(
        received < N,
        "the slow consumer cannot have received everything"
    );
}
