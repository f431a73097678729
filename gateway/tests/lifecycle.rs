//! Health, readiness, metrics, and the drain on shutdown.

mod common;

use std::time::Duration;

use common::{Client, ForTest, Settings, TestServer, http};
use serde_json::json;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::dev().await;
    assert_eq!(
        http::get(server.addr, "/healthz").await.unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(
        http::get(server.addr, "/readyz").await.unwrap(),
        (200, "ready\n".into())
    );

    let mut c = server.client().await;
    c.subscribe("m:1").await.unwrap();
    c.publish("m:1", json!(1)).await.unwrap();
    c.message("m:1").await.unwrap();
    c.send_text("{").await.unwrap();
    c.wait_for(|f| f["type"] == "error").await.unwrap();

    let (status, body) = http::get(server.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for name in [
        "switchboard_connections ",
        "switchboard_connections_accepted_total ",
        "switchboard_subscriptions ",
        "switchboard_messages_received_total ",
        "switchboard_messages_sent_total ",
        "switchboard_errors_total{error=\"bad_request\",code=\"107\"} ",
        "switchboard_queue_drops_total ",
        "switchboard_publish_delivery_latency_seconds_bucket{le=\"0.001\"} ",
        "switchboard_publish_delivery_latency_seconds_count ",
        "switchboard_broker_publications_total ",
    ] {
        assert!(body.contains(name), "/metrics lacks {name:?}:\n{body}");
    }
    assert!(body.contains("# TYPE switchboard_publish_delivery_latency_seconds histogram"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_clients_to_reconnect_and_drains() {
    let mut s = Settings::for_test();
    s.gateway.drain_timeout = Duration::from_secs(5);
    let server = TestServer::start(s).await;
    let mut a = server.client().await;
    a.subscribe("d:1").await.unwrap();
    let b = server.user("bob").await;
    server.shutdown.cancel();
    for c in [a, b] {
        let closed = c.closed().await.unwrap();
        assert_eq!(closed.code, Some(1001));
        let d = closed.disconnect().unwrap();
        assert_eq!(
            *d,
            json!({"type": "disconnect", "code": 1001, "reason": "server shutting down", "reconnect": true})
        );
    }
    let result = tokio::time::timeout(Duration::from_secs(10), server.handle)
        .await
        .expect("run returns after the drain");
    result.unwrap().unwrap();
    assert!(
        Client::connect(&format!("ws://{}/ws", server.addr))
            .await
            .is_err(),
        "no longer accepting"
    );
}
