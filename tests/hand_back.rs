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
//!
//! And an owner that joined after the leader died, before anyone asked
//! for its channels: the follower, its leader lost, hands the replica to
//! that owner (the witness names the follower to it), which leads the
//! channel in the same epoch (until session 17 it started them anew).

use std::path::Path;

use serde_json::json;
use switchboard_cluster::ring::Ring;
use switchboard_testkit::{
    client::Client,
    cluster::{counter, declared_down},
    fleet::Fleet,
    http,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// What a broker logs when it sees b4 join.
const B4_UP: &str = "member up member=b4(Broker,Active";

/// What a gateway logs when it routes by the ring with b4 (and not b1).
const RING_WITH_B4: &str = r#"ring changed brokers=["b2", "b3", "b4"]"#;

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
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(ch) || std::env::var("DUMP_ALL").is_ok())
                .collect();
            eprintln!("=== {name} on {ch}\n{}", lines.join("\n"));
        }
    }
    assert_eq!((offset, epoch.as_str()), want, "{ch}: not on in its epoch");
}

/// How many log lines of every broker, running or not, say `what`.
fn logged(fleet: &Fleet, what: &str) -> usize {
    fleet
        .logs()
        .iter()
        .map(|(_, log)| log.matches(what).count())
        .sum()
}

/// How many replicas were handed back to a leader that lost its copy.
fn handed_back(fleet: &Fleet) -> usize {
    logged(fleet, "replica handed to its leader")
}

/// What a new subscriber reads of each of `channels` from the history.
async fn assert_history(fleet: &Fleet, channels: &[String], want: &[&str]) {
    let mut sub = Client::connect(&fleet.ws_urls()[1]).await.unwrap();
    for ch in channels {
        let r = sub
            .request(json!({"type": "history", "channel": ch, "limit": 1000}))
            .await
            .unwrap();
        let data: Vec<&str> = r["data"]["publications"]
            .as_array()
            .map(|p| p.iter().filter_map(|m| m["data"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(data, want, "{ch}: {r}");
    }
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
    assert_history(&fleet, &channels, &["one", "two", "three", "four"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_joined_after_the_leader_died_leads_the_followers_replica() {
    let mut fleet = Fleet::start(Path::new(BIN), 3, Some(replicated), None)
        .await
        .unwrap();
    // Led by b1 now, owned by b4 once b1 is gone and b4 has joined.
    let before = fleet.ring();
    let after = Ring::new(["b2", "b3", "b4"].map(str::to_owned));
    let channels: Vec<String> = (0..400)
        .map(|i| format!("join:{i}"))
        .filter(|c| before.failover(c).next() == Some("b1") && after.owner(c) == Some("b4"))
        .take(8)
        .collect();
    assert!(channels.len() >= 4, "{channels:?}");
    let mut c = Client::connect(&fleet.ws_urls()[0]).await.unwrap();
    let mut epochs = Vec::new();
    for ch in &channels {
        assert_eq!(acknowledged(&mut c, ch, "one").await.0, 1, "{ch}");
        let (offset, epoch) = acknowledged(&mut c, ch, "two").await;
        assert_eq!(offset, 2, "{ch}");
        epochs.push(epoch);
    }

    // b1 killed with nothing asked of its channels until it is declared
    // down everywhere: nobody stood for them. Then b4 joins, and owns them.
    fleet.kill("b1").await.unwrap();
    for p in fleet.gateways.iter().chain(fleet.brokers.values()) {
        declared_down(p, "b1").await.unwrap();
    }
    fleet.plan("b4", None).unwrap();
    fleet.start_broker("b4").await.unwrap();
    fleet.wait_up("b4", &[0, 0]).await.unwrap();
    // And every gateway routes by the ring with b4, and the follower and
    // witness see it: a gateway that does not yet sends the channel to
    // the follower, which then stands for it itself (right too, but not
    // what this tests).
    let deadline = tokio::time::Instant::now() + switchboard_testkit::WAIT;
    let b4_seen = |fleet: &Fleet| {
        let gateways = fleet
            .gateways
            .iter()
            .all(|g| g.log().contains(RING_WITH_B4));
        gateways
            && ["b2", "b3"]
                .iter()
                .all(|b| fleet.brokers[*b].log().contains(B4_UP))
    };
    while !b4_seen(&fleet) {
        assert!(tokio::time::Instant::now() < deadline, "b4 never seen up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (ch, epoch) in channels.iter().zip(&epochs) {
        goes_on(&fleet, &mut c, ch, "three", (3, epoch)).await;
    }
    let handed = logged(&fleet, "replica handed to the channel's owner");
    let unreplicated = metric(&fleet, "b4", "switchboard_replication_unreplicated_total").await;
    println!(
        "b4 owns {} channels; {handed} replicas handed to it; served unreplicated {unreplicated} times",
        channels.len()
    );
    if handed != channels.len() {
        for (name, log) in fleet.logs() {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("join:")).collect();
            eprintln!("=== {name}\n{}", lines.join("\n"));
        }
    }
    assert_eq!(handed, channels.len(), "each channel's replica, once");
    assert_eq!(unreplicated, 0.0, "a channel was served unreplicated");
    assert_history(&fleet, &channels, &["one", "two", "three"]).await;
}
