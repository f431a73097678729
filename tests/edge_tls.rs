//! The TLS flags of `switchboard dev` and `switchboard gateway`, as users
//! run them: certificates from a CA made in the test, `wss://` clients, and
//! the API port with a certificate of its own.

use std::{path::Path, sync::Arc};

use rustls_pki_types::ServerName;
use serde_json::json;
use switchboard_proto::api::v1 as pb;
use switchboard_testkit::{
    WAIT,
    api::grpc_tls,
    certificates::ClusterCa,
    client::Client,
    edge_ca::EdgeCa,
    process::{Process, free_port},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// The API key of the embedded dev config.
const DEV_API_KEY: &str = "switchboard-dev-api-key";

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The certificate a new handshake at `addr` is shown.
async fn served(addr: std::net::SocketAddr, tls: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The API's address from the dev process' `server API: https://ADDR/api/`
/// line (its first `https://` is the client port's metrics), polled: the
/// line may come just after the one `start` waited for.
async fn api_addr(server: &Process) -> std::net::SocketAddr {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = server.log();
        let addr = log
            .split("server API: https://")
            .nth(1)
            .and_then(|rest| rest.split('/').next());
        if let Some(addr) = addr {
            return addr.parse().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no API address in the log:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dev_serves_wss_and_an_api_port_with_its_own_certificate() {
    let ca = EdgeCa::new().unwrap();
    let edge = ca.issue("edge", "clients").unwrap();
    let api = ca.issue("api", "backends").unwrap();
    let args = [
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--client-tls-cert",
        path(&edge.cert),
        "--client-tls-key",
        path(&edge.key),
        "--api-tls-cert",
        path(&api.cert),
        "--api-tls-key",
        path(&api.key),
    ];
    let server = Process::start_announcing(Path::new(BIN), &args, "wss://")
        .await
        .unwrap();
    let api_addr = api_addr(&server).await;
    let ws = ca.client_config(&[b"http/1.1"]);
    let h2 = ca.client_config(&[b"h2"]);
    assert_eq!(served(server.addr, ws.clone()).await, edge.der);
    assert_eq!(served(api_addr, h2.clone()).await, api.der);

    let url = format!("wss://{}/ws", server.addr);
    let mut alice = Client::connect_tls(&url, ws).await.unwrap();
    alice.subscribe("chat:dev").await.unwrap();
    let mut grpc = grpc_tls(api_addr, Some(DEV_API_KEY), h2).await.unwrap();
    grpc.publish(pb::PublishRequest {
        channel: "chat:dev".into(),
        data_json: r#""hello""#.into(),
        idempotency_key: None,
    })
    .await
    .unwrap();
    assert_eq!(
        alice.message("chat:dev").await.unwrap()["data"],
        json!("hello")
    );

    // The container healthcheck probes the TLS port, trusting the
    // configured certificate (and no other).
    let listen = server.addr.to_string();
    assert!(health(&listen, &edge.cert).await.success());
    assert!(!health(&listen, &api.cert).await.success());
}

/// `switchboard health` as the image's HEALTHCHECK runs it in a gateway
/// container with TLS on its client port.
async fn health(listen: &str, cert: &Path) -> std::process::ExitStatus {
    let out = tokio::process::Command::new(BIN)
        .arg("health")
        .env("SWITCHBOARD_LISTEN", listen)
        .env("SWITCHBOARD_CLIENT_TLS_CERT", cert)
        .env_remove("SWITCHBOARD_HTTP")
        .env_remove("SWITCHBOARD_HEALTH_URL")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() || text.contains("https://"), "{text}");
    out.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_gateway_serves_wss_with_the_flags() {
    let ca = EdgeCa::new().unwrap();
    let edge = ca.issue("edge", "clients").unwrap();
    let bin = Path::new(BIN);
    let port = free_port().unwrap();
    let grpc = format!("127.0.0.1:{port}");
    let broker_args = ClusterCa::shared().secured(&[
        "node",
        "--replication-factor",
        "1",
        "--name",
        "b1",
        "--grpc",
        &grpc,
        "--http",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
    ]);
    let broker_args: Vec<&str> = broker_args.iter().map(String::as_str).collect();
    let _broker = Process::start_announcing(bin, &broker_args, "grpc://")
        .await
        .unwrap();
    let brokers = format!("b1={grpc}");
    let gateway_args = ClusterCa::shared().secured(&[
        "gateway",
        "--name",
        "g1",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        &brokers,
        "--client-tls-cert",
        path(&edge.cert),
        "--client-tls-key",
        path(&edge.key),
    ]);
    let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
    let gateway = Process::start_announcing(bin, &gateway_args, "wss://")
        .await
        .unwrap();
    let url = format!("wss://{}/ws", gateway.addr);
    let tls = ca.client_config(&[b"http/1.1"]);
    let mut a = Client::connect_tls(&url, tls.clone()).await.unwrap();
    let mut b = Client::connect_tls(&url, tls).await.unwrap();
    a.subscribe("chat:cluster").await.unwrap();
    b.publish("chat:cluster", json!(1)).await.unwrap();
    assert_eq!(a.message("chat:cluster").await.unwrap()["data"], json!(1));
}
