//! `switchboard bench` against a real `switchboard dev`: a short run with
//! small numbers whose counts must add up exactly. No timing thresholds:
//! CI machines are slow and shared.

use std::path::Path;

use serde_json::Value;
use switchboard_testkit::process::Process;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// `switchboard bench --cluster` with `extra`, on a load small enough for
/// CI (10 connections, 2 channels of 5 subscribers, 40 publications/s for
/// 1 s), every process on core 0: its report and its progress lines,
/// once it succeeded.
async fn cluster_bench(extra: &[&str]) -> (Value, String) {
    let out = tokio::process::Command::new(BIN)
        .args([
            "bench",
            "--cluster",
            "--server-cpus",
            "0",
            "--client-cpus",
            "0",
        ])
        .args([
            "--connections",
            "10",
            "--channels",
            "2",
            "--subscribers",
            "5",
        ])
        .args(["--rate", "40", "--duration", "1s", "--settle", "200ms"])
        .args(["--drain", "20s"])
        .args(extra)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bench --cluster failed:\n{stderr}");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (report, stderr)
}

#[tokio::test]
async fn bench_delivers_every_publication_to_every_subscriber_in_order() {
    smoke(false).await;
}

/// The same over `switchboard.batch`: frames split back into messages.
#[tokio::test]
async fn bench_with_batched_frames_delivers_the_same() {
    smoke(true).await;
}

async fn smoke(batch: bool) {
    let server = Process::start(Path::new(BIN), &["dev", "--listen", "127.0.0.1:0"])
        .await
        .expect("switchboard dev starts");
    let url = server.ws_url();
    let mut args = vec![
        "bench",
        "--url",
        &url,
        "--connections",
        "30",
        "--sources",
        "3",
        "--channels",
        "6",
        "--subscribers",
        "5",
        "--rate",
        "120",
        "--payload",
        "64",
        "--duration",
        "3s",
        "--settle",
        "200ms",
        "--drain",
        "20s",
    ];
    if batch {
        args.push("--batch");
    }
    let out = tokio::process::Command::new(BIN)
        .args(&args)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    let c = &summary["connections"];
    assert_eq!(c["established"], 30, "{summary:#}");
    assert_eq!(c["failed"], 0);
    assert_eq!(c["closed_by_server"], 0);
    assert_eq!(c["publishers"], 6);
    assert_eq!(c["sources"].as_array().unwrap().len(), 3);
    let s = &summary["subscriptions"];
    assert_eq!(
        (s["requested"].as_u64(), s["established"].as_u64()),
        (Some(30), Some(30))
    );

    let d = &summary["delivery"];
    let expected = d["expected"].as_u64().unwrap();
    // 120/s for 3 s, each to 5 subscribers.
    assert_eq!(summary["publish"]["published"], 360, "{summary:#}");
    assert_eq!(expected, 360 * 5);
    assert_eq!(
        d["delivered"].as_u64(),
        Some(expected),
        "{summary:#}\n{stderr}"
    );
    assert_eq!(d["lost"], 0);
    assert_eq!(d["order_violations"], 0);
    assert_eq!(d["errors"], 0);
    assert_eq!(summary["latency_us"]["count"].as_u64(), Some(expected));

    // The server was found by its port and measured.
    let servers = summary["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["pid"].as_u64(), server.pid().map(u64::from));
    assert!(servers[0]["rss_connected_bytes"].as_u64().unwrap() > 0);
    assert!(
        stderr.contains("publish"),
        "progress lines on stderr:\n{stderr}"
    );
    assert_eq!(summary["plan"]["batch"], batch);
    // The yardstick was measured, and the server's cost read against it.
    let cost = &summary["cost"];
    assert!(
        cost["loopback_write"]["cpu_us"].as_f64().unwrap() > 0.0,
        "{cost}"
    );
    assert!(
        cost["server_cpu_us_per_delivery"].as_f64().unwrap() > 0.0,
        "{cost}"
    );
    assert!(
        cost["server_writes_per_delivery"].as_f64().unwrap() > 0.0,
        "{cost}"
    );
    // The second yardstick, where the tool may use a second core.
    if let Some(waking) = cost.get("waking_write") {
        assert!(waking["cpu_us"].as_f64().unwrap() > 0.0, "{cost}");
        assert!(
            cost["server_waking_writes_per_delivery"].as_f64().unwrap() > 0.0,
            "{cost}"
        );
    }
}

/// An idle run (no channels): connections only, held for the duration;
/// the server's memory per connection read, no publication, no yardstick.
#[tokio::test]
async fn bench_idle_holds_connections_and_measures_memory() {
    let server = Process::start(Path::new(BIN), &["dev", "--listen", "127.0.0.1:0"])
        .await
        .expect("switchboard dev starts");
    let url = server.ws_url();
    let out = tokio::process::Command::new(BIN)
        .args([
            "bench",
            "--url",
            &url,
            "--connections",
            "200",
            "--sources",
            "2",
            "--duration",
            "1s",
            "--settle",
            "200ms",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench (idle) failed:\n{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let c = &summary["connections"];
    assert_eq!(c["established"], 200, "{summary:#}");
    assert_eq!(c["failed"], 0);
    assert_eq!(c["closed_by_server"], 0);
    assert_eq!(c["publishers"], 0);
    assert_eq!(summary["subscriptions"]["requested"], 0);
    assert_eq!(summary["publish"]["published"], 0);
    assert_eq!(summary["delivery"]["delivered"], 0);
    let servers = summary["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["pid"].as_u64(), server.pid().map(u64::from));
    // Read before and after connecting: 200 connections take some memory.
    let before = servers[0]["rss_before_bytes"].as_u64().unwrap();
    let connected = servers[0]["rss_connected_bytes"].as_u64().unwrap();
    assert!(before > 0 && connected >= before, "{summary:#}");
    assert!(servers[0]["rss_per_connection_bytes"].as_f64().is_some());
}

/// `--cluster`: the bench starts `switchboard dev`, then a gateway and a
/// broker, runs the plan (and the sweep) against each and compares their
/// CPU per delivery.
#[tokio::test]
async fn bench_cluster_runs_dev_then_a_gateway_and_broker_and_compares_them() {
    let (report, stderr) = cluster_bench(&["--sweep", "60"]).await;
    for (run, servers) in [("dev", 1), ("cluster", 2)] {
        let summary = &report[run];
        let d = &summary["delivery"];
        // 40/s for 1 s, each to 5 subscribers.
        assert_eq!(summary["publish"]["published"], 40, "{run}: {summary:#}");
        assert_eq!(d["delivered"].as_u64(), Some(200), "{run}: {summary:#}");
        assert_eq!(
            (d["lost"].as_u64(), d["order_violations"].as_u64()),
            (Some(0), Some(0))
        );
        assert_eq!(
            summary["servers"].as_array().unwrap().len(),
            servers,
            "{run}"
        );
    }
    // The sweep's one rate, run after the plan's own, on each server.
    for run in ["dev", "cluster"] {
        let steps = report["sweep"][run].as_array().unwrap();
        assert_eq!(steps.len(), 1, "{report:#}");
        assert_eq!(
            (steps[0]["rate"].as_f64(), steps[0]["lost"].as_u64()),
            (Some(60.0), Some(0))
        );
        // How full the server core was at that rate.
        assert!(
            steps[0]["cpu_percent"].as_f64().unwrap() > 0.0,
            "{report:#}"
        );
        assert!(
            report["sweep"].get(format!("{run}_knee")).is_some(),
            "{report:#}"
        );
    }
    let ratio = report["cluster_to_dev"].as_f64().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0, "{report:#}");
    assert!(stderr.contains("ratio"), "the ratio on stderr:\n{stderr}");
}

/// `--cluster --replication-factor 2`: the cluster run has two brokers,
/// each channel stored on both (replication's price, docs/benchmarks.md),
/// and nothing is lost.
#[tokio::test]
async fn bench_cluster_with_replication_runs_two_brokers() {
    let (report, _) = cluster_bench(&["--replication-factor", "2"]).await;
    let summary = &report["cluster"];
    assert_eq!(summary["publish"]["published"], 40, "{summary:#}");
    let d = &summary["delivery"];
    assert_eq!(
        (d["delivered"].as_u64(), d["lost"].as_u64()),
        (Some(200), Some(0)),
        "{summary:#}"
    );
    // The gateway and both brokers.
    assert_eq!(summary["servers"].as_array().unwrap().len(), 3);
}
