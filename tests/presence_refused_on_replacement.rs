//! A gateway places its subscription to a channel again whenever the
//! owner's stream comes back (the owner restarted, or the channel moved),
//! and with it the presence entries of its clients. One of those entries
//! refused (the channel's presence is full at the new copy) must cost that
//! client its presence entry, never the channel's deliveries: before the
//! fix, the subscription stayed holding live deliveries for good, and
//! every client of the gateway on that channel silently heard nothing more
//! (the hand-over loss the fault scenarios saw, docs/replication.md).

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::{WAIT, api::Http, client::Client, fleet::Fleet};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const CHANNEL: &str = "crowd:1";

/// The dev config with every namespace's presence capped at `max`, in a
/// file of its own (the test's only broker reads it at each start).
fn config(max: usize) -> String {
    let path = std::env::temp_dir().join(format!("sb-presence-{max}-{}.toml", std::process::id()));
    let config = include_str!("../config/dev.toml").replacen(
        "[namespaces.\"*\"]\n",
        &format!("[namespaces.\"*\"]\npresence_max_clients = {max}\n"),
        1,
    );
    assert!(config.contains("presence_max_clients = "));
    std::fs::write(&path, config).unwrap();
    path.to_str().unwrap().to_owned()
}

fn roomy(_broker: &str) -> Vec<String> {
    vec!["--config".into(), config(2)]
}

fn tight(_broker: &str) -> Vec<String> {
    vec!["--config".into(), config(1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_presence_entry_does_not_stop_deliveries() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(BIN.as_ref(), 1, Some(roomy), None).await?;
    let url = fleet.ws_urls()[0].clone();
    let api = Http::new(fleet.gateway_addrs()[0], Some("switchboard-dev-api-key"));
    let (mut a, mut b) = (Client::connect(&url).await?, Client::connect(&url).await?);
    for c in [&mut a, &mut b] {
        switchboard_testkit::cluster::subscribe_once_routed(c, CHANNEL).await?;
    }

    // Back with room for one: the gateway's two clients no longer fit.
    fleet.set_broker_args(Some(tight));
    let ups = fleet.ups("b1");
    fleet.kill("b1").await?;
    fleet.start_broker("b1").await?;
    fleet.wait_up("b1", &ups).await?;

    // Both clients hear of the new epoch and what is published in it.
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    for n in 1u64.. {
        let r = api
            .call("publish", json!({"channel": CHANNEL, "data": {"n": n}}))
            .await?;
        if r.status == 200 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never published: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in [&mut a, &mut b] {
        let message = c.message(CHANNEL).await?;
        assert_eq!(message["channel"], CHANNEL);
    }
    let presence = api.ok("presence", json!({"channel": CHANNEL})).await?;
    let clients = presence["clients"].as_array().map_or(0, Vec::len);
    assert_eq!(clients, 1, "{presence}");
    Ok(())
}
