//! Publishes pipelined on a gateway's publish stream (one stream per
//! broker, many calls in flight on it) while the owner of their channels
//! is killed with SIGKILL: every publish in flight is answered, with its
//! position or an error, none hangs, and the next publishes to the same
//! channels succeed on the broker the ring moves them to.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_cluster::ring::Ring;
use switchboard_testkit::{
    WAIT,
    client::Client,
    cluster::{broker, gateway, scenario_config, seed_of},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Channels owned by the broker that is killed; one publish in flight on
/// each at a time, all on the gateway's one stream to it.
const CHANNELS: usize = 24;

/// One publish per channel, all sent before any answer is read; the
/// answers, by channel index: `Ok` with a response, `Err` with an error
/// frame. Fails if an answer does not come within the client's wait.
async fn round(
    client: &mut Client,
    channels: &[String],
    round: u64,
) -> anyhow::Result<Vec<Result<(), String>>> {
    let first = round * 1000;
    for (i, ch) in channels.iter().enumerate() {
        let id = first + i as u64;
        client
            .send(json!({"type": "publish", "id": id, "channel": ch, "data": round}))
            .await?;
    }
    let mut answers = Vec::new();
    for i in 0..channels.len() {
        let id = first + i as u64;
        let f = client.wait_for(|f| f["id"] == json!(id)).await?;
        answers.push(match f["type"].as_str() {
            Some("response") => Ok(()),
            _ => Err(f.to_string()),
        });
    }
    Ok(answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_fails_the_publishes_in_flight_and_none_hangs() {
    let bin = Path::new(BIN);
    let b1 = broker(bin, "b1", None).await.unwrap();
    let seed = seed_of(&b1).unwrap();
    let mut b2 = broker(bin, "b2", Some(&seed)).await.unwrap();
    let config = scenario_config("publish-stream").unwrap();
    let g = gateway(bin, "g1", &seed, &config).await.unwrap();
    let ring = Ring::new(["b1", "b2"]);
    let channels: Vec<String> = (0..)
        .map(|i| format!("pipelined:{i}"))
        .filter(|c| ring.owner(c) == Some("b2"))
        .take(CHANNELS)
        .collect();
    let mut client = Client::connect(&g.ws_url()).await.unwrap();

    // Until the gateway routes to both brokers, a round may be refused.
    let formed = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let answers = round(&mut client, &channels, rounds).await.unwrap();
        if answers.iter().all(Result::is_ok) {
            break;
        }
        assert!(formed.elapsed() < WAIT * 2, "never formed: {answers:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Rounds back to back; b2 is killed while they run.
    let mut killer = Some(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b2.kill().await.unwrap();
        (b2, Instant::now())
    }));
    let started = Instant::now();
    let (mut answered, mut failed) = (0, 0);
    let mut killed_at = None;
    let mut _killed = None;
    loop {
        rounds += 1;
        let answers = round(&mut client, &channels, rounds)
            .await
            .expect("every publish in flight is answered within the wait");
        answered += answers.len();
        failed += answers.iter().filter(|a| a.is_err()).count();
        if let Some(k) = killer.take_if(|k| k.is_finished()) {
            let (b2, at) = k.await.unwrap();
            (_killed, killed_at) = (Some(b2), Some(at));
            continue;
        }
        if killed_at.is_some() && answers.iter().all(Result::is_ok) {
            break;
        }
        assert!(
            started.elapsed() < WAIT * 3,
            "publishes never succeeded again after the kill: {answers:?}"
        );
    }
    let resumed = killed_at.unwrap().elapsed();
    eprintln!(
        "{answered} publishes answered around the kill, {failed} with an error; \
         all succeeding again {resumed:?} after it"
    );
    assert!(answered > CHANNELS);
}
