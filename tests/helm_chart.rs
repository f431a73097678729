//! The Helm chart (helm/switchboard), checked without a cluster by
//! helm/check_chart.py: Helm's own Go SDK (through PyPI's helm-python-sdk)
//! lints it and renders it for the defaults and several `--set`
//! combinations, every manifest is validated against the Kubernetes
//! schemas (kubernetes-validate), the chart's promises are asserted, and
//! values.schema.json must refuse bad values. Then the chart's default
//! configuration runs in the real binary and behaves as the chart says, and
//! the cluster credentials the chart generates carry a broker and a gateway
//! over mutual TLS and sealed gossip.
//!
//! Needs python3 with venv and pip; the pinned packages
//! (helm/requirements.txt) go into target/helm-venv once.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_testkit::{client::Client, cluster, process::Process, python};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const REQUIREMENTS: &str = include_str!("../helm/requirements.txt");

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

/// The virtualenv with helm/requirements.txt, made once.
async fn venv() -> PathBuf {
    let dir = target_dir().join("helm-venv");
    python::venv(&dir, Path::new(ROOT), "helm/requirements.txt", REQUIREMENTS).await
}

#[tokio::test]
async fn chart_lints_renders_validates_and_refuses_bad_values() {
    let started = Instant::now();
    let python = venv().await;
    let setup = started.elapsed();
    let dir = target_dir().join("helm-check");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchboard.toml");
    let out = run(
        &python,
        &[
            "helm/check_chart.py",
            "helm/switchboard",
            "--dump-config",
            config.to_str().unwrap(),
            "--dump-credentials",
            dir.join("credentials").to_str().unwrap(),
        ],
        Duration::from_secs(300),
    )
    .await;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    let checks = report.lines().filter(|l| l.starts_with("ok - ")).count();
    assert!(
        report.contains(&format!("helm chart: all {checks} checks ok")) && checks >= 20,
        "{report}"
    );
    println!(
        "helm checks: venv {setup:.1?}, checks {:.1?}",
        started.elapsed() - setup
    );

    // The chart's default configuration, in the binary the image carries:
    // it loads, refuses anonymous clients, and accepts the release's tokens,
    // which must carry the audience and issuer the chart sets.
    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("helm/switchboard/values.yaml")).unwrap(),
    )
    .unwrap();
    let audience = values["auth"]["audience"].as_str().unwrap();
    let issuer = values["auth"]["issuer"].as_str().unwrap();
    assert!(!audience.is_empty() && !issuer.is_empty());
    let secret = "chart-test-secret";
    let env = [
        ("SWITCHBOARD_HMAC_SECRET", secret),
        ("SWITCHBOARD_AUTH_AUDIENCE", audience),
        ("SWITCHBOARD_AUTH_ISSUER", issuer),
    ];
    let server = Process::start_with_env(
        Path::new(BIN),
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        &env,
        "ws://",
    )
    .await
    .unwrap();
    let mut anonymous = Client::connect(&server.ws_url()).await.unwrap();
    anonymous
        .send(json!({"type": "subscribe", "channel": "chat:a"}))
        .await
        .unwrap();
    assert_eq!(anonymous.closed().await.unwrap().code, Some(4001));
    let token = tokio::process::Command::new(BIN)
        .args(["token", "--user", "alice", "--config"])
        .arg(&config)
        .envs(env)
        .output()
        .await
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap();
    let mut alice = Client::connect(&format!("{}?token={}", server.ws_url(), token.trim()))
        .await
        .unwrap();
    assert_eq!(alice.next().await.unwrap()["type"], "authenticated");
    alice.subscribe("chat:a").await.unwrap();
    alice.publish("chat:a", json!("hi")).await.unwrap();
    assert_eq!(alice.message("chat:a").await.unwrap()["data"], "hi");
    // The same secret without the audience and issuer: refused.
    let bare = tokio::process::Command::new(BIN)
        .args(["token", "--user", "eve", "--config"])
        .arg(&config)
        .env("SWITCHBOARD_HMAC_SECRET", secret)
        .output()
        .await
        .unwrap();
    let bare = String::from_utf8(bare.stdout).unwrap();
    let eve = Client::connect(&format!("{}?token={}", server.ws_url(), bare.trim()))
        .await
        .unwrap();
    assert_eq!(eve.closed().await.unwrap().code, Some(4001));

    // The credentials the chart generates (RSA, from Helm's genCA and
    // genSignedCert), in the real binary: a broker with the first ordinal's
    // certificate and a gateway named as one of the Deployment's pods, with
    // the gateways' shared certificate, form a cluster over mutual TLS and
    // sealed gossip, and carry a publication.
    let creds = dir.join("credentials");
    let file = |name: &str| creds.join(name).to_str().unwrap().to_owned();
    let broker_name = "sb-switchboard-broker-0";
    let (ca, gossip_key) = (file("ca.crt"), file("gossip.key"));
    let (broker_crt, broker_key) = (
        file(&format!("{broker_name}.crt")),
        file(&format!("{broker_name}.key")),
    );
    // As the chart's StatefulSet: R = 2 (the default), votes in a data
    // directory.
    let data = dir.join("broker-data");
    std::fs::create_dir_all(&data).unwrap();
    let data = data.to_str().unwrap().to_owned();
    let broker_env = [
        ("SWITCHBOARD_DATA_DIR", data.as_str()),
        ("SWITCHBOARD_TLS_CA", ca.as_str()),
        ("SWITCHBOARD_TLS_CERT", broker_crt.as_str()),
        ("SWITCHBOARD_TLS_KEY", broker_key.as_str()),
        ("SWITCHBOARD_GOSSIP_KEY", gossip_key.as_str()),
    ];
    let config_path = config.to_str().unwrap();
    let broker = Process::start_with_env(
        Path::new(BIN),
        &[
            "node",
            "--name",
            broker_name,
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--config",
            config_path,
        ],
        &broker_env,
        "grpc://",
    )
    .await
    .unwrap();
    let seed = cluster::seed_of(&broker).unwrap();
    let (gateway_crt, gateway_key) = (file("gateway.crt"), file("gateway.key"));
    let mut gateway_env = env.to_vec();
    gateway_env.extend([
        ("SWITCHBOARD_TLS_CA", ca.as_str()),
        ("SWITCHBOARD_TLS_CERT", gateway_crt.as_str()),
        ("SWITCHBOARD_TLS_KEY", gateway_key.as_str()),
        ("SWITCHBOARD_GOSSIP_KEY", gossip_key.as_str()),
    ]);
    let gateway = Process::start_with_env(
        Path::new(BIN),
        &[
            "gateway",
            "--name",
            "sb-switchboard-gateway-6f9c7d5b8-x2k4p",
            "--listen",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--seed",
            &seed,
            "--config",
            config_path,
        ],
        &gateway_env,
        "ws://",
    )
    .await
    .unwrap();
    let mut bob = Client::connect(&format!("{}?token={}", gateway.ws_url(), token.trim()))
        .await
        .unwrap();
    assert_eq!(bob.next().await.unwrap()["type"], "authenticated");
    cluster::subscribe_once_routed(&mut bob, "chat:helm")
        .await
        .unwrap();
    bob.publish("chat:helm", json!("over mTLS")).await.unwrap();
    assert_eq!(bob.message("chat:helm").await.unwrap()["data"], "over mTLS");
}
