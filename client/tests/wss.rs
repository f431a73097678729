//! The client over `wss://` against a real in-process server whose client
//! port speaks TLS with a certificate from a CA made in the test.

mod common;

use std::time::Duration;

use common::{ForTest, Settings, TestServer, WAIT};
use serde_json::json;
use switchboard_client::{Client, ClientEvent, State, SubscriptionEvent};
use switchboard_gateway::EdgeTlsConfig;
use switchboard_testkit::edge_ca::EdgeCa;

#[tokio::test]
async fn wss_with_an_added_root_round_trips_and_without_it_never_connects() {
    let ca = EdgeCa::new().unwrap();
    let cert = ca.issue("edge", "localhost").unwrap();
    let mut settings = Settings::for_test();
    settings.gateway.tls = Some(EdgeTlsConfig::new(cert.cert.clone(), cert.key.clone()));
    let server = TestServer::start(settings).await;
    let url = format!("wss://localhost:{}/ws", server.addr.port());

    let client = Client::builder(&url)
        .add_root_certificate(ca.ca_der())
        .only_added_roots()
        .connect();
    let mut sub = client.subscribe("chat:wss").await.unwrap();
    client
        .publish("chat:wss", json!({"over": "tls"}))
        .await
        .unwrap();
    let data = loop {
        match sub.next_within(WAIT).await {
            Some(SubscriptionEvent::Message(p)) => break p.data,
            Some(_) => continue,
            None => panic!("no message over wss:// within the wait"),
        }
    };
    assert_eq!(data, json!({"over": "tls"}));
    assert!(matches!(client.state(), State::Connected { .. }));

    // Mozilla's roots do not include the test's CA: the handshake fails,
    // and the client keeps trying without ever connecting.
    let stranger = Client::builder(&url)
        .connect_timeout(Duration::from_secs(2))
        .connect();
    let mut events = stranger.events();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the failed attempt is reported")
            .unwrap();
        match event {
            ClientEvent::Connected { .. } => panic!("connected without trusting the CA"),
            ClientEvent::Connecting { reason, .. } => {
                assert!(reason.contains("certificate"), "{reason}");
                break;
            }
            _ => {}
        }
    }
    assert!(!matches!(stranger.state(), State::Connected { .. }));
    stranger.disconnect().await;
    client.disconnect().await;
    server.stop().await;
}
