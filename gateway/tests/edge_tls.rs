//! TLS on the gateway's public ports, with certificates made in the test:
//! `wss://`, the HTTP API over HTTPS with HTTP/2 (curl), the gRPC API over
//! TLS (tonic), the API port's own certificate, renewal by replacing the
//! files, and refusals (plain HTTP, a bad handshake) that nobody else
//! notices.

mod common;

use std::{net::SocketAddr, process::Stdio, sync::Arc, time::Duration};

use common::{API_KEY, Client, ForTest, Settings, TestServer, WAIT};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde_json::json;
use switchboard_gateway::EdgeTlsConfig;
use switchboard_node::BrokerConfig;
use switchboard_proto::api::v1 as pb;
use switchboard_testkit::{
    api::grpc_tls,
    edge_ca::{EdgeCa, EdgeCert},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

const WS_ALPN: &[&[u8]] = &[b"http/1.1"];

fn tls_settings(cert: &EdgeCert, api: Option<&EdgeCert>) -> Settings {
    let mut settings = Settings::for_test();
    let mut tls = EdgeTlsConfig::new(cert.cert.clone(), cert.key.clone());
    tls.api_cert = api.map(|c| c.cert.clone());
    tls.api_key = api.map(|c| c.key.clone());
    tls.reload_every = Duration::from_millis(100);
    settings.gateway.tls = Some(tls);
    settings
}

fn wss(addr: SocketAddr) -> String {
    format!("wss://127.0.0.1:{}/ws", addr.port())
}

async fn wss_client(ca: &EdgeCa, addr: SocketAddr) -> Client {
    Client::connect_tls(&wss(addr), ca.client_config(WS_ALPN))
        .await
        .expect("wss connect")
}

/// The certificate a new handshake at `addr` is shown, and the ALPN
/// protocol agreed.
async fn handshake(addr: SocketAddr, tls: Arc<ClientConfig>) -> (Vec<u8>, Option<Vec<u8>>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(WAIT, TlsConnector::from(tls).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let (_, conn) = stream.get_ref();
    let peer = conn.peer_certificates().expect("a certificate")[0].to_vec();
    (peer, conn.alpn_protocol().map(<[u8]>::to_vec))
}

/// `curl` with the test CA; returns (HTTP version, status, body).
async fn curl(ca: &EdgeCa, args: &[&str]) -> (String, u16, String) {
    let ca_path = ca.ca_cert();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca_path)
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl runs (installed by .ci/run)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, last) = text.rsplit_once('\n').unwrap();
    let (version, status) = last.split_once(' ').unwrap();
    (version.to_owned(), status.parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn wss_https_http2_and_grpc_over_tls_reach_subscribers() {
    let ca = EdgeCa::new().unwrap();
    let cert = ca.issue("edge", "client-port").unwrap();
    let server = TestServer::start(tls_settings(&cert, None)).await;

    let mut alice = wss_client(&ca, server.addr).await;
    let mut bob = wss_client(&ca, server.addr).await;
    alice.subscribe("chat:tls").await.unwrap();
    bob.publish("chat:tls", json!({"from": "wss"}))
        .await
        .unwrap();
    assert_eq!(
        alice.message("chat:tls").await.unwrap()["data"],
        json!({"from": "wss"})
    );

    // The JSON API over HTTPS, HTTP/2 agreed by ALPN.
    let url = format!("https://localhost:{}/api/publish", server.addr.port());
    let auth = format!("Authorization: apikey {API_KEY}");
    let body = json!({"channel": "chat:tls", "data": {"from": "https"}}).to_string();
    let (version, status, reply) = curl(
        &ca,
        &["--http2", "-H", &auth, "--json", &body, url.as_str()],
    )
    .await;
    assert_eq!((version.as_str(), status), ("2", 200), "{reply}");
    assert_eq!(
        alice.message("chat:tls").await.unwrap()["data"],
        json!({"from": "https"})
    );
    // And over HTTP/1.1, as older backends call it.
    let body = json!({"channel": "chat:tls", "data": {"from": "https/1.1"}}).to_string();
    let (version, status, _) = curl(
        &ca,
        &["--http1.1", "-H", &auth, "--json", &body, url.as_str()],
    )
    .await;
    assert_eq!((version.as_str(), status), ("1.1", 200));
    assert_eq!(
        alice.message("chat:tls").await.unwrap()["data"],
        json!({"from": "https/1.1"})
    );

    // gRPC over TLS (HTTP/2 by ALPN) on the same port.
    let (_, alpn) = handshake(server.addr, ca.client_config(&[b"h2"])).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let mut grpc = grpc_tls(server.addr, Some(API_KEY), ca.client_config(&[b"h2"]))
        .await
        .unwrap();
    grpc.publish(pb::PublishRequest {
        channel: "chat:tls".into(),
        data_json: r#"{"from":"grpc"}"#.into(),
        idempotency_key: None,
    })
    .await
    .unwrap();
    assert_eq!(
        alice.message("chat:tls").await.unwrap()["data"],
        json!({"from": "grpc"})
    );
    server.stop().await;
}

#[tokio::test]
async fn the_api_port_presents_its_own_certificate() {
    let ca = EdgeCa::new().unwrap();
    let client_cert = ca.issue("edge", "client-port").unwrap();
    let api_cert = ca.issue("api", "api-port").unwrap();
    let settings = tls_settings(&client_cert, Some(&api_cert));
    let server = TestServer::start_with(settings, BrokerConfig::default(), true).await;
    let h2 = ca.client_config(&[b"h2"]);
    assert_eq!(handshake(server.addr, h2.clone()).await.0, client_cert.der);
    assert_eq!(handshake(server.api_addr, h2.clone()).await.0, api_cert.der);

    let mut alice = wss_client(&ca, server.addr).await;
    alice.subscribe("chat:api").await.unwrap();
    let mut grpc = grpc_tls(server.api_addr, Some(API_KEY), h2).await.unwrap();
    grpc.publish(pb::PublishRequest {
        channel: "chat:api".into(),
        data_json: "1".into(),
        idempotency_key: None,
    })
    .await
    .unwrap();
    assert_eq!(alice.message("chat:api").await.unwrap()["data"], json!(1));
    server.stop().await;
}

#[tokio::test]
async fn replaced_files_serve_new_handshakes_while_old_connections_stay() {
    let ca = EdgeCa::new().unwrap();
    let first = ca.issue("edge", "first").unwrap();
    let server = TestServer::start(tls_settings(&first, None)).await;
    let tls = ca.client_config(WS_ALPN);
    assert_eq!(handshake(server.addr, tls.clone()).await.0, first.der);
    let mut old = wss_client(&ca, server.addr).await;
    old.subscribe("chat:renew").await.unwrap();

    let second = ca.issue("edge", "second").unwrap();
    assert_ne!(first.der, second.der);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if handshake(server.addr, tls.clone()).await.0 == second.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new handshakes still see the first certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The connection opened on the first certificate carries on, both ways.
    let mut new = wss_client(&ca, server.addr).await;
    new.publish("chat:renew", json!("after")).await.unwrap();
    assert_eq!(
        old.message("chat:renew").await.unwrap()["data"],
        json!("after")
    );
    old.publish("chat:renew", json!("from old")).await.unwrap();

    // A renewal that does not load (a key for another certificate) keeps
    // the loaded one.
    std::fs::copy(&first.key, &second.key).unwrap();
    let metrics_url = format!("https://localhost:{}/metrics", server.addr.port());
    let counted = |metrics: &str, result: &str| {
        metrics.lines().any(|l| {
            l.starts_with("switchboard_edge_tls_reloads_total")
                && l.contains(&format!("result=\"{result}\""))
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, _, metrics) = curl(&ca, &[&metrics_url]).await;
        if counted(&metrics, "error") {
            assert!(counted(&metrics, "ok"), "{metrics}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken renewal was not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handshake(server.addr, tls.clone()).await.0, second.der);
    server.stop().await;
}

#[tokio::test]
async fn plaintext_and_bad_handshakes_are_refused_while_a_bystander_keeps_receiving() {
    let ca = EdgeCa::new().unwrap();
    let cert = ca.issue("edge", "edge").unwrap();
    let server = TestServer::start(tls_settings(&cert, None)).await;
    let mut bystander = wss_client(&ca, server.addr).await;
    bystander.subscribe("chat:by").await.unwrap();
    let mut publisher = wss_client(&ca, server.addr).await;
    let mut sent = 0u64;
    let mut step = async |publisher: &mut Client, bystander: &mut Client| {
        sent += 1;
        publisher.publish("chat:by", json!(sent)).await.unwrap();
        assert_eq!(
            bystander.message("chat:by").await.unwrap()["data"],
            json!(sent)
        );
    };

    // Plain HTTP to the TLS port: told so, then closed.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, plain.read_to_string(&mut answer))
        .await
        .expect("closed in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("TLS"), "{answer}");
    step(&mut publisher, &mut bystander).await;

    // A plain ws:// client fails cleanly.
    let url = format!("ws://{}/ws", server.addr);
    assert!(Client::connect(&url).await.is_err());
    step(&mut publisher, &mut bystander).await;

    // A TLS record of garbage, and a client that does not trust the
    // certificate: closed.
    let mut junk = TcpStream::connect(server.addr).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, junk.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a bad handshake is closed in time");
    let stranger = EdgeCa::new().unwrap();
    let refused = Client::connect_tls(&wss(server.addr), stranger.client_config(WS_ALPN)).await;
    assert!(refused.is_err());
    step(&mut publisher, &mut bystander).await;

    // A peer that opens TLS and goes silent holds only its own socket.
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    step(&mut publisher, &mut bystander).await;

    let (_, status, metrics) = curl(
        &ca,
        &[&format!("https://localhost:{}/metrics", server.addr.port())],
    )
    .await;
    assert_eq!(status, 200);
    for reason in ["plaintext", "handshake"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("switchboard_edge_tls_refused_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "no {reason} refusal counted:\n{metrics}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_api_certificate_without_its_key_is_refused_at_start() {
    let ca = EdgeCa::new().unwrap();
    let cert = ca.issue("edge", "edge").unwrap();
    let mut settings = tls_settings(&cert, None);
    settings.gateway.tls.as_mut().unwrap().api_cert = Some(cert.cert.clone());
    let server = TestServer::start(settings).await;
    let result = tokio::time::timeout(WAIT, server.handle)
        .await
        .expect("the server gives up at once")
        .unwrap();
    let error = result.expect_err("half an API certificate is refused");
    assert!(error.to_string().contains("api_key"), "{error}");
}
