//! The JavaScript client's tests (`clients/js/test/`, Node's built-in test
//! runner) as part of `cargo test`: they start this build's `switchboard`
//! binary themselves, restart and kill it, and drive headless Chromium
//! through the demo page at `/`.
//!
//! Needs Node 20.10 or newer (`node` on PATH, or its path in
//! `SWITCHBOARD_NODE`) and Chromium (see tests/browser.rs).

use std::{path::Path, time::Duration};

use switchboard_testkit::edge_ca::EdgeCa;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The whole Node suite; generous because a busy CI machine may be slow.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test]
async fn javascript_client_node_and_chromium_tests_pass() {
    let node = std::env::var("SWITCHBOARD_NODE").unwrap_or_else(|_| "node".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_node_version(&node).await;

    let run = tokio::process::Command::new(&node)
        .args([
            "--experimental-websocket",
            "--test",
            "--test-reporter=spec",
            "clients/js/test/",
        ])
        .current_dir(root)
        .env("SWITCHBOARD_BIN", BIN)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SUITE_TIMEOUT, run)
        .await
        .expect("the Node test suite finishes in time")
        .unwrap_or_else(|e| panic!("cannot run {node:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Node tests failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // An empty run would pass too; make sure the suite was found.
    assert!(
        stdout.contains("ℹ pass") && !stdout.contains("ℹ pass 0"),
        "no Node tests ran:\n{stdout}\n{stderr}"
    );
}

/// The client over `wss://` (clients/js/test-tls/): the server's certificate
/// comes from a CA made here, which Node trusts through
/// `NODE_EXTRA_CA_CERTS`.
#[tokio::test]
async fn javascript_client_over_wss_with_a_test_ca() {
    let node = std::env::var("SWITCHBOARD_NODE").unwrap_or_else(|_| "node".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_node_version(&node).await;
    let ca = EdgeCa::new().unwrap();
    let cert = ca.issue("edge", "localhost").unwrap();

    let run = tokio::process::Command::new(&node)
        .args([
            "--experimental-websocket",
            "--test",
            "--test-reporter=spec",
            "clients/js/test-tls/",
        ])
        .current_dir(root)
        .env("SWITCHBOARD_BIN", BIN)
        .env("SWITCHBOARD_TEST_TLS_CERT", &cert.cert)
        .env("SWITCHBOARD_TEST_TLS_KEY", &cert.key)
        .env("NODE_EXTRA_CA_CERTS", ca.ca_cert())
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SUITE_TIMEOUT, run)
        .await
        .expect("the Node TLS tests finish in time")
        .unwrap_or_else(|e| panic!("cannot run {node:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Node TLS tests failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("ℹ pass 2"),
        "the Node TLS tests did not all run:\n{stdout}\n{stderr}"
    );
}

/// `--experimental-websocket` (the global WebSocket) arrived in Node 20.10.
async fn check_node_version(node: &str) {
    let out = tokio::process::Command::new(node)
        .arg("--version")
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run {node:?} ({e}); install Node 20.10+ or set SWITCHBOARD_NODE")
        });
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (20, 10),
        "{node} is {}; the JavaScript client's tests need Node 20.10 or newer",
        version.trim()
    );
}
