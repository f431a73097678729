//! What the container image and the Helm chart rely on in the binary:
//! `switchboard health` as the image's healthcheck, gossip bound by host
//! name (a container's own hostname) and refused on a wildcard address,
//! and SWITCHBOARD_DRAIN_TIMEOUT.

use std::{path::Path, process::Output, time::Duration};

use switchboard_testkit::{
    WAIT,
    certificates::{ClusterCa, strs},
    client::Client,
    gossip_key::gossip_key,
    process::{Process, free_port},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::time::timeout(
        WAIT * 2,
        tokio::process::Command::new(BIN)
            .args(args)
            .env_remove("SWITCHBOARD_HTTP")
            .env_remove("SWITCHBOARD_LISTEN")
            .env("SWITCHBOARD_GOSSIP_KEY", gossip_key())
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("switchboard exits in time")
    .unwrap()
}

#[tokio::test]
async fn health_probes_the_role_port_and_fails_on_anything_but_2xx() {
    let server = Process::start(Path::new(BIN), &["dev", "--listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let healthz = server.http_url("/healthz");
    let ok = switchboard(&["health", "--url", &healthz], &[]).await;
    assert!(ok.status.success(), "{ok:?}");

    // Without --url: /healthz on the port in SWITCHBOARD_LISTEN (a gateway
    // or dev) or SWITCHBOARD_HTTP (a node), as the image's HEALTHCHECK runs.
    let listen = format!("0.0.0.0:{}", server.addr.port());
    let by_env = switchboard(&["health"], &[("SWITCHBOARD_LISTEN", &listen)]).await;
    assert!(by_env.status.success(), "{by_env:?}");
    assert!(String::from_utf8_lossy(&by_env.stdout).contains("/healthz: 200"));

    let missing = switchboard(&["health", "--url", &server.http_url("/nope")], &[]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("status 404"));

    let closed = format!("http://127.0.0.1:{}/healthz", free_port().unwrap());
    let refused = switchboard(&["health", "--url", &closed], &[]).await;
    assert_eq!(refused.status.code(), Some(1));
}

#[tokio::test]
async fn health_times_out_on_a_silent_port() {
    // Accepts, then says nothing: the probe must not hang the healthcheck.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let out = switchboard(&["health", "--url", &url, "--timeout", "500ms"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer within"));
}

#[tokio::test]
async fn gossip_binds_a_host_name_and_refuses_a_wildcard() {
    // `localhost` stands for a container's own hostname.
    let seed = Process::start_announcing(
        Path::new(BIN),
        &strs(&ClusterCa::shared().secured(&[
            "node",
            "--replication-factor",
            "1",
            "--name",
            "b1",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--gossip",
            "localhost:0",
        ])),
        "grpc://",
    )
    .await
    .unwrap();
    let gossip = seed.announced("gossip://").expect("gossip address");
    assert!(gossip.ip().is_loopback(), "{gossip}");

    // A gateway seeded with it by name routes to it.
    let seed_by_name = format!("localhost:{}", gossip.port());
    let gateway = Process::start(
        Path::new(BIN),
        &strs(&ClusterCa::shared().secured(&[
            "gateway",
            "--name",
            "g1",
            "--listen",
            "127.0.0.1:0",
            "--gossip",
            "localhost:0",
            "--seed",
            &seed_by_name,
        ])),
    )
    .await
    .unwrap();
    let mut c = Client::connect(&gateway.ws_url()).await.unwrap();
    c.subscribe("chat:a").await.unwrap();

    let wildcard = switchboard(
        &strs(&ClusterCa::shared().secured(&[
            "node",
            "--replication-factor",
            "1",
            "--name",
            "b2",
            "--gossip",
            "0.0.0.0:0",
            "--seed",
            &seed_by_name,
        ])),
        &[],
    )
    .await;
    assert_eq!(wildcard.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wildcard.stderr);
    assert!(stderr.contains("wildcard"), "{stderr}");
}

#[tokio::test]
async fn drain_timeout_comes_from_the_environment() {
    let bad = switchboard(
        &["dev", "--listen", "127.0.0.1:0"],
        &[("SWITCHBOARD_DRAIN_TIMEOUT", "soon")],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SWITCHBOARD_DRAIN_TIMEOUT"));

    // A gateway waits up to the drain timeout for its clients to go. A
    // client that never answers the close keeps its connection for 2 s, so
    // a 500 ms timeout from the environment shows as the deadline passing,
    // where the embedded config's 5 s does not.
    for (env, passes) in [(Some("500ms"), true), (None, false)] {
        let env: Vec<(&str, &str)> = env
            .map(|t| ("SWITCHBOARD_DRAIN_TIMEOUT", t))
            .into_iter()
            .collect();
        let mut server = Process::start_with_env(
            Path::new(BIN),
            &["dev", "--listen", "127.0.0.1:0"],
            &env,
            "ws://",
        )
        .await
        .unwrap();
        let mut silent = Client::connect(&server.ws_url()).await.unwrap();
        silent.subscribe("chat:a").await.unwrap();
        let status = server.terminate().await.unwrap();
        assert!(status.success(), "{status}");
        assert_eq!(
            server.log().contains("drain deadline passed"),
            passes,
            "{env:?}:\n{}",
            server.log()
        );
        drop(silent);
    }

    // A draining broker waits for its gateways to leave, up to the drain
    // timeout, then stops. A gateway given the broker statically (no
    // gossip) never leaves, so the broker's exit shows the timeout: 1 s
    // from the environment (plus 1 s for streams to close), not the
    // embedded config's 5 s, and not never.
    let mut broker = Process::start_with_env(
        Path::new(BIN),
        &strs(&ClusterCa::shared().secured(&[
            "node",
            "--replication-factor",
            "1",
            "--name",
            "b1",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
        ])),
        &[("SWITCHBOARD_DRAIN_TIMEOUT", "1s")],
        "grpc://",
    )
    .await
    .unwrap();
    let grpc = broker.announced("grpc://").expect("gRPC address");
    let gateway = Process::start(
        Path::new(BIN),
        &strs(&ClusterCa::shared().secured(&[
            "gateway",
            "--name",
            "g1",
            "--listen",
            "127.0.0.1:0",
            "--broker",
            &format!("b1={grpc}"),
        ])),
    )
    .await
    .unwrap();
    let mut c = Client::connect(&gateway.ws_url()).await.unwrap();
    c.subscribe("chat:a").await.unwrap();
    let started = std::time::Instant::now();
    let status = broker.terminate().await.unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "the broker stopped after {took:?}; log:\n{}",
        broker.log()
    );
}

/// The brokers the gateway at `addr` routes to, by its server API.
async fn routed(addr: std::net::SocketAddr) -> anyhow::Result<Vec<String>> {
    let reply = switchboard_testkit::api::Http::new(addr, Some("switchboard-dev-api-key"))
        .call("info", serde_json::json!({}))
        .await?;
    anyhow::ensure!(reply.status == 200, "{}", reply.body);
    Ok(reply.body["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect())
}

async fn wait_routed(gateway: std::net::SocketAddr, want: &[&str], within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = routed(gateway).await;
        if now.as_ref().is_ok_and(|n| n == want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway routes to {now:?}, not {want:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn broker_restarted_on_its_old_address_is_routed_again_at_once() {
    // A container or pod that restarts keeps its address. The new process
    // must win over its old, dead identity on that address at once, every
    // time, not once the old one expires (30 s).
    let gossip = format!("127.0.0.1:{}", free_port().unwrap());
    let broker_args = ClusterCa::shared().secured(&[
        "node",
        "--replication-factor",
        "1",
        "--name",
        "b1",
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--gossip",
        &gossip,
    ]);
    let broker_args = strs(&broker_args);
    let start_broker = || Process::start_announcing(Path::new(BIN), &broker_args, "grpc://");
    let mut broker = start_broker().await.unwrap();
    let gateway = Process::start(
        Path::new(BIN),
        &strs(&ClusterCa::shared().secured(&[
            "gateway",
            "--name",
            "g1",
            "--listen",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--seed",
            &gossip,
        ])),
    )
    .await
    .unwrap();
    wait_routed(gateway.addr, &["b1"], WAIT).await;
    for _ in 0..3 {
        broker.kill().await.unwrap();
        wait_routed(gateway.addr, &[], WAIT).await;
        broker = start_broker().await.unwrap();
        wait_routed(gateway.addr, &["b1"], WAIT).await;
    }
}
