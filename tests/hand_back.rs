//! A replicated owner killed with `kill -9` and started again before
//! anyone took its place (docs/replication.md, "Changing the
//! configuration"): it comes back with its votes but no log, the ring
//! still names it the owner, and each channel's follower hands it its
//! complete replica with the term's configuration. The owner keeps the
//! copy as its log, stands on that term, and leads the channel replicated
//! again, in the same epoch at the same offsets. Killed a second time, its
//! channels go on in their epoch at their followers, which they could not
//! if it had served them unreplicated from the copy (as it did until
//! session 14).

use std::path::Path;

use serde_json::json;
use switchboard_testkit::{client::Client, cluster::counter, fleet::Fleet, http};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn replicated(_broker: &str) -> Vec<String> {
    ["--replication-factor", "2"].map(str::to_owned).to_vec()
}

/// Publishes on `ch` until acknowledged; the reply's offset and epoch.
async fn acknowledged(c: &mut Client, ch: &str, data: &str) -> (u64, String) {
    let reply = switchboard_testkit::cluster::publish_acknowledged(c, ch, data)
        .await
        .unwrap();
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    (reply["offset"].as_u64().unwrap(), epoch)
}

/// A series' value at broker `name`.
async fn metric(fleet: &Fleet, name: &str, series: &str) -> f64 {
    let addr = fleet.spec(name).unwrap().http_addr();
    counter(&http::get(addr, "/metrics").await.unwrap().1, series)
}

/// Publishes `data` on `ch` until acknowledged, and asserts it went on at
/// `offset` of `epoch`; dumps every log line about `ch` if not.
async fn goes_on(fleet: &Fleet, c: &mut Client, ch: &str, data: &str, want: (u64, &str)) {
    let (offset, epoch) = acknowledged(c, ch, data).await;
    if (offset, epoch.as_str()) != want {
        for (name, log) in fleet.logs() {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(ch)).collect();
            eprintln!("=== {name} on {ch}\n{}", lines.join("\n"));
        }
    }
    assert_eq!((offset, epoch.as_str()), want, "{ch}: not on in its epoch");
}

/// How many replicas were handed back to a leader that lost its copy, by
/// every broker, running or not.
fn handed_back(fleet: &Fleet) -> usize {
    fleet
        .logs()
        .iter()
        .map(|(_, log)| log.matches("replica handed to its leader").count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_leads_the_replicas_handed_back_replicated() {
    let mut fleet = Fleet::start(Path::new(BIN), 3, Some(replicated), None)
        .await
        .unwrap();
    let ring = fleet.ring();
    let owner = ring.failover("back:0").next().unwrap().to_owned();
    let channels: Vec<String> = (0..40)
        .map(|i| format!("back:{i}"))
        .filter(|c| ring.failover(c).next() == Some(owner.as_str()))
        .collect();
    let mut c = Client::connect(&fleet.ws_urls()[0]).await.unwrap();
    let mut epochs = Vec::new();
    for ch in &channels {
        assert_eq!(acknowledged(&mut c, ch, "one").await.0, 1, "{ch}");
        let (offset, epoch) = acknowledged(&mut c, ch, "two").await;
        assert_eq!(offset, 2, "{ch}");
        epochs.push(epoch);
    }

    // Killed and started again at once, with nothing asked of the cluster
    // meanwhile: nobody takes its channels before it is back.
    let before = fleet.ups(&owner);
    fleet.kill(&owner).await.unwrap();
    fleet.start_broker(&owner).await.unwrap();
    fleet.wait_up(&owner, &before).await.unwrap();
    for (ch, epoch) in channels.iter().zip(&epochs) {
        goes_on(&fleet, &mut c, ch, "three", (3, epoch)).await;
    }
    let handed = handed_back(&fleet);
    let unreplicated = metric(&fleet, &owner, "switchboard_replication_unreplicated_total").await;
    println!(
        "{owner} owned {} channels; {handed} replicas handed back to it; served unreplicated {unreplicated} times",
        channels.len()
    );
    assert!(handed > 0, "no replica was handed back: nothing tested");
    assert_eq!(
        unreplicated, 0.0,
        "a channel handed back was served unreplicated"
    );

    // Killed again, for good: every channel goes on in its epoch.
    fleet.kill(&owner).await.unwrap();
    for (ch, epoch) in channels.iter().zip(&epochs) {
        goes_on(&fleet, &mut c, ch, "four", (4, epoch)).await;
    }
    // A new subscriber reads all four from the history, once each.
    let mut sub = Client::connect(&fleet.ws_urls()[1]).await.unwrap();
    for ch in &channels {
        let r = sub
            .request(json!({"type": "history", "channel": ch, "limit": 1000}))
            .await
            .unwrap();
        let data: Vec<&str> = r["data"]["publications"]
            .as_array()
            .map(|p| p.iter().filter_map(|m| m["data"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(data, ["one", "two", "three", "four"], "{ch}: {r}");
    }
}
