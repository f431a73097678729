//! The socket limits (docs/security.md, "Client side"), hit on purpose over
//! real sockets: the socket budget, per-address caps and connection rate,
//! the handshake, HTTP idle and body timeouts, the API concurrency cap.
//! Where a limit acts while clients are served, a bystander WebSocket
//! proves that it loses no message.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{API_KEY, Client, ForTest, Settings, TestServer, WAIT, http};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    task::JoinSet,
    time::Instant,
};

/// Raises this process' soft open-file limit to the hard one, as the
/// `switchboard` binary does: a test that holds hundreds of sockets at both
/// ends would otherwise hit the usual soft limit of 1024.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The value of `switchboard_limited_total{limit="<limit>"}`.
async fn limited(server: &TestServer, limit: &str) -> f64 {
    let (status, metrics) = http::get(server.addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let series = format!("switchboard_limited_total{{limit=\"{limit}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

/// Reads until the peer closes (or resets) the socket; what it sent.
async fn read_until_closed(mut s: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the server closes the socket");
    got
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    socket.connect(to).await
}

/// A WebSocket handshake from `from`; Err when the server refuses it.
async fn websocket_from(from: [u8; 4], server: &TestServer) -> anyhow::Result<()> {
    let tcp = connect_from(from, server.addr).await?;
    let handshake = tokio_tungstenite::client_async(server.url(), tcp);
    let (mut ws, _) = tokio::time::timeout(WAIT, handshake).await??;
    // Kept open long enough to count, then closed politely.
    ws.close(None).await?;
    Ok(())
}

/// A publisher, and a bystander subscribed to `channel` that must get
/// every one of `n` publications, in order, while a limit acts.
async fn publish_to_bystander(publisher: &mut Client, bystander: &mut Client, n: u64) {
    for i in 0..n {
        publisher
            .publish("sockets:a", json!({ "i": i }))
            .await
            .unwrap();
    }
    for i in 0..n {
        let m = bystander.message("sockets:a").await.unwrap();
        assert_eq!(m["data"]["i"], i, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2c_connections_are_shut_down_after_the_idle_timeout() {
    raise_open_file_limit();
    let mut s = Settings::for_test();
    s.gateway.limits.http_idle_timeout = Duration::from_millis(500);
    let server = TestServer::start(s).await;
    let mut bystander = server.client().await;
    bystander.subscribe("sockets:a").await.unwrap();
    let mut publisher = server.client().await;

    const N: usize = 500;
    let mut open = JoinSet::new();
    for _ in 0..N {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        // One request each, so that these are live HTTP/2 connections.
        let req = ::http::Request::get(format!("http://{}/healthz", server.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        open.spawn(async move {
            // The client keeps the connection (and answers pings) until
            // the server ends it.
            let _sender = sender;
            conn.await
        });
    }
    let started = Instant::now();
    publish_to_bystander(&mut publisher, &mut bystander, 50).await;
    let all_closed = async {
        while let Some(ended) = open.join_next().await {
            // GOAWAY and close, or a reset: either way the socket is gone.
            let _ = ended.unwrap().unwrap();
        }
    };
    tokio::time::timeout(WAIT, all_closed)
        .await
        .expect("every idle h2c connection is shut down");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(limited(&server, "http_idle_timeout").await >= N as f64);
    // The WebSockets are not HTTP connections: they stay.
    publish_to_bystander(&mut publisher, &mut bystander, 10).await;
}

#[tokio::test]
async fn an_api_post_that_never_sends_its_body_gets_408() {
    let mut s = Settings::for_test();
    s.api.body_timeout = Duration::from_millis(300);
    let server = TestServer::start(s).await;
    let mut raw = TcpStream::connect(server.api_addr).await.unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    let started = Instant::now();
    raw.write_all(head.as_bytes()).await.unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(raw).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#""code":"timeout""#), "{got}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(limited(&server, "body_timeout").await >= 1.0);
}

#[tokio::test]
async fn silent_sockets_are_closed_after_the_handshake_timeout() {
    let mut s = Settings::for_test();
    s.gateway.limits.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(s).await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let started = Instant::now();
    let mut closed = JoinSet::new();
    for s in silent {
        closed.spawn(read_until_closed(s));
    }
    while let Some(sent) = closed.join_next().await {
        assert!(sent.unwrap().is_empty(), "nothing to say to a silent peer");
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(limited(&server, "handshake_timeout").await >= 100.0);
    // Their places in the budget are free again.
    server.client().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_socket_budget_refuses_new_sockets_and_the_bystander_keeps_every_message() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_sockets = 4;
    s.gateway.limits.handshake_timeout = Duration::from_secs(60);
    let server = TestServer::start(s).await;
    let mut bystander = server.client().await;
    bystander.subscribe("sockets:a").await.unwrap();
    let mut publisher = server.client().await;
    let idle = [
        TcpStream::connect(server.addr).await.unwrap(),
        TcpStream::connect(server.addr).await.unwrap(),
    ];
    // The budget is full: every further socket, of any kind, is closed
    // without a byte, while the bystander gets every publication.
    let mut refused = JoinSet::new();
    for _ in 0..20 {
        let s = TcpStream::connect(server.addr).await.unwrap();
        refused.spawn(read_until_closed(s));
    }
    publish_to_bystander(&mut publisher, &mut bystander, 200).await;
    while let Some(sent) = refused.join_next().await {
        assert!(sent.unwrap().is_empty());
    }
    assert!(Client::connect(&server.url()).await.is_err());
    drop(idle);
    // Closing sockets frees their places.
    let deadline = Instant::now() + WAIT;
    while http::get(server.addr, "/healthz").await.is_err() {
        assert!(Instant::now() < deadline, "places never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limited(&server, "max_sockets").await >= 21.0);
    publish_to_bystander(&mut publisher, &mut bystander, 10).await;
}

#[tokio::test]
async fn one_address_is_capped_and_another_is_not() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_sockets_per_ip = 2;
    let server = TestServer::start(s).await;
    let mut bystander = server.client().await;
    bystander.subscribe("sockets:a").await.unwrap();
    let mut publisher = server.client().await;
    // A third socket from 127.0.0.1 is told why, and closed.
    let third = TcpStream::connect(server.addr).await.unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(third).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("Retry-After: 1\r\n"), "{got}");
    assert!(Client::connect(&server.url()).await.is_err());
    // 127.0.0.2 is another address, with places of its own.
    websocket_from([127, 0, 0, 2], &server).await.unwrap();
    publish_to_bystander(&mut publisher, &mut bystander, 50).await;
    drop(publisher);
    let deadline = Instant::now() + WAIT;
    while Client::connect(&server.url()).await.is_err() {
        assert!(Instant::now() < deadline, "the place never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn new_sockets_per_address_are_rate_limited() {
    let mut s = Settings::for_test();
    s.gateway.limits.connection_rate_per_ip = 0.001;
    s.gateway.limits.connection_burst_per_ip = 3;
    let server = TestServer::start(s).await;
    let mut bystander = server.client().await;
    bystander.subscribe("sockets:a").await.unwrap();
    let mut publisher = server.client().await;
    websocket_from([127, 0, 0, 1], &server).await.unwrap();
    // The burst is spent: the fourth new socket from 127.0.0.1 is refused
    // although only two are open.
    let fourth = TcpStream::connect(server.addr).await.unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(fourth).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    for _ in 0..3 {
        websocket_from([127, 0, 0, 3], &server).await.unwrap();
    }
    publish_to_bystander(&mut publisher, &mut bystander, 50).await;
}

#[tokio::test]
async fn api_requests_beyond_the_concurrency_cap_get_503() {
    let mut s = Settings::for_test();
    s.api.max_concurrent_requests = 2;
    s.api.body_timeout = Duration::from_secs(60);
    let server = TestServer::start_with(s, Default::default(), true).await;
    let head = format!(
        "POST /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    );
    // Two requests whose bodies never come hold both places.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(server.api_addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    let api = switchboard_testkit::api::Http::new(server.api_addr, Some(API_KEY));
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        let reply = api.call("info", json!({})).await.unwrap();
        if reply.status == 503 {
            break reply;
        }
        assert!(Instant::now() < deadline, "never refused: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.error_code(), "overloaded");
    assert_eq!(refused.headers["retry-after"], "1");
    let mut grpc = switchboard_testkit::api::grpc(server.api_addr, Some(API_KEY))
        .await
        .unwrap();
    let status = grpc
        .info(switchboard_proto::api::v1::Empty {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(limited(&server, "max_concurrent_requests").await >= 2.0);
    // A stalled request that ends frees its place.
    stalled[0].write_all(b"{}").await.unwrap();
    let deadline = Instant::now() + WAIT;
    while api.call("info", json!({})).await.unwrap().status != 200 {
        assert!(Instant::now() < deadline, "the place never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
