//! Ownership moving while traffic flows: a fourth broker joins a running
//! cluster and takes about a quarter of the channels, then a broker drains
//! on SIGTERM and hands its channels over. In both, a publisher keeps
//! publishing through one gateway while a subscriber on the other checks
//! that every acknowledged publication arrives once, in order, in the same
//! epoch (no `resubscribed`), and a client that was away recovers all it
//! missed with `since`.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchboard_cluster::ring::Ring;
use switchboard_testkit::{
    WAIT,
    api::Http,
    client::Client,
    cluster::{broker, counter, gateway, scenario_config, seed_of, subscribe_once_routed},
    http,
    process::Process,
};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

const CHANNELS: usize = 40;

fn channels() -> Vec<String> {
    (0..CHANNELS).map(|i| format!("moving:{i}")).collect()
}

/// Publishes `{"n": round}` to every channel once per 100 ms until told to
/// stop; an error reply (the owner is moving) is retried. Returns the
/// acknowledged rounds per channel.
async fn publisher(
    mut client: Client,
    mut stop: watch::Receiver<bool>,
) -> HashMap<String, Vec<u64>> {
    let mut acked: HashMap<String, Vec<u64>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for round in 1.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return acked,
        }
        for ch in channels() {
            let deadline = Instant::now() + WAIT;
            loop {
                let r = client
                    .request(json!({"type": "publish", "channel": ch, "data": {"n": round}}))
                    .await
                    .unwrap();
                if r["type"] == "response" {
                    acked.entry(ch.clone()).or_default().push(round);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "publish to {ch} kept failing: {r}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    unreachable!()
}

/// Collects frames until the last acknowledged round of every channel has
/// arrived (the expected last rounds come through `last` once known).
async fn subscriber(
    mut client: Client,
    mut last: watch::Receiver<Option<HashMap<String, u64>>>,
) -> Vec<Value> {
    let mut frames = Vec::new();
    let mut newest: HashMap<String, u64> = HashMap::new();
    loop {
        let done = last.borrow_and_update().as_ref().is_some_and(|last| {
            last.iter()
                .all(|(ch, n)| newest.get(ch).is_some_and(|seen| seen >= n))
        });
        if done {
            return frames;
        }
        tokio::select! {
            frame = client.next() => {
                let frame = frame.expect("the subscriber's connection held");
                if frame["type"] == "message" {
                    let ch = frame["channel"].as_str().unwrap().to_owned();
                    newest.insert(ch, frame["data"]["n"].as_u64().unwrap());
                }
                frames.push(frame);
            }
            _ = last.changed() => {}
        }
    }
}

/// Subscribes to every channel; returns each channel's epoch.
async fn subscribe_all(client: &mut Client) -> HashMap<String, String> {
    let mut epochs = HashMap::new();
    for ch in channels() {
        let r = subscribe_once_routed(client, &ch).await.unwrap();
        epochs.insert(ch, r["epoch"].as_str().unwrap().to_owned());
    }
    epochs
}

/// What a client that left at `left` (per channel: offset, epoch, last
/// round seen) gets back by subscribing with `since`.
async fn recover(
    url: &str,
    left: &HashMap<String, (u64, String, u64)>,
    acked: &HashMap<String, Vec<u64>>,
) {
    let mut client = Client::connect(url).await.unwrap();
    for (ch, (offset, epoch, round)) in left {
        let r = client
            .ok(json!({"type": "subscribe", "channel": ch,
                       "since": {"offset": offset, "epoch": epoch}}))
            .await
            .unwrap();
        assert_eq!(r["recovered"], true, "{ch} not recovered: {r}");
        assert_eq!(
            r["epoch"].as_str(),
            Some(epoch.as_str()),
            "{ch}: epoch changed"
        );
        let got: Vec<u64> = r["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["data"]["n"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = acked[ch].iter().copied().filter(|n| n > round).collect();
        // Acknowledged after it left, all of them, in order.
        let extra: Vec<u64> = got.iter().copied().filter(|n| !want.contains(n)).collect();
        assert!(
            want.iter().all(|n| got.contains(n)) && extra.is_empty(),
            "{ch}: recovered {got:?}, acknowledged after leaving {want:?}"
        );
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{ch}: out of order {got:?}"
        );
    }
}

/// Reads until every channel has at least one message; returns where the
/// client stands on each (offset, epoch, round).
async fn positions(client: &mut Client) -> HashMap<String, (u64, String, u64)> {
    let mut at = HashMap::new();
    while at.len() < CHANNELS {
        let f = client.wait_for(|f| f["type"] == "message").await.unwrap();
        at.insert(
            f["channel"].as_str().unwrap().to_owned(),
            (
                f["offset"].as_u64().unwrap(),
                f["epoch"].as_str().unwrap().to_owned(),
                f["data"]["n"].as_u64().unwrap(),
            ),
        );
    }
    at
}

/// Every acknowledged round arrived once and in order, in the epoch the
/// subscription started in.
fn check_continuity(
    frames: &[Value],
    acked: &HashMap<String, Vec<u64>>,
    epochs: &HashMap<String, String>,
) {
    let resets: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "resubscribed")
        .collect();
    assert!(resets.is_empty(), "continuity lost: {resets:?}");
    // Clients whose subscriptions moved between brokers did not leave: no
    // client is seen leaving a channel and joining it again.
    let mut left: HashSet<(String, String)> = HashSet::new();
    for f in frames.iter() {
        let key = || {
            (
                f["channel"].as_str().unwrap_or_default().to_owned(),
                f["info"]["client_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        if f["type"] == "leave" {
            left.insert(key());
        } else if f["type"] == "join" {
            assert!(!left.contains(&key()), "a moved client flickered: {f}");
        }
    }
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    let mut offsets: HashMap<String, u64> = HashMap::new();
    for f in frames.iter().filter(|f| f["type"] == "message") {
        let ch = f["channel"].as_str().unwrap().to_owned();
        assert_eq!(f["epoch"].as_str(), Some(epochs[&ch].as_str()), "{f}");
        let offset = f["offset"].as_u64().unwrap();
        let prev = offsets.insert(ch.clone(), offset);
        assert!(
            prev.is_none_or(|p| offset == p + 1),
            "{ch}: offset {offset} after {prev:?} (a gap or a repeat)"
        );
        got.entry(ch)
            .or_default()
            .push(f["data"]["n"].as_u64().unwrap());
    }
    for (ch, want) in acked {
        let got = got.get(ch).cloned().unwrap_or_default();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{ch}: {got:?}");
        let have: HashSet<u64> = got.iter().copied().collect();
        let lost: Vec<&u64> = want.iter().filter(|n| !have.contains(n)).collect();
        assert!(
            lost.is_empty(),
            "{ch}: acknowledged but never delivered: {lost:?}"
        );
    }
}

/// Channels that only get keyed publishes through the server API.
fn keyed_channels() -> Vec<String> {
    (0..CHANNELS).map(|i| format!("keyed:{i}")).collect()
}

/// Publishes once to every keyed channel through `gateway`'s server API,
/// with the key `tag`; returns each answer (offset, epoch).
async fn publish_keyed(gateway: &Process, tag: &str) -> HashMap<String, Value> {
    let api = Http::new(gateway.addr, Some("switchboard-dev-api-key"));
    let mut answers = HashMap::new();
    for ch in keyed_channels() {
        let body = json!({"channel": ch, "data": {"tag": tag}, "idempotency_key": tag});
        let deadline = Instant::now() + WAIT;
        let answer = loop {
            let reply = api.call("publish", body.clone()).await.unwrap();
            if reply.status == 200 {
                break reply.body;
            }
            assert!(Instant::now() < deadline, "{ch}: {reply:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        answers.insert(ch, answer);
    }
    answers
}

/// Runs publisher and subscriber around `change`, then checks them; a keyed
/// publish made before the change and retried through the other gateway
/// after it is answered with its first position, not published again.
async fn across<F, Fut>(gateways: &[Process], change: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut sub = Client::connect(&gateways[0].ws_url()).await.unwrap();
    let epochs = subscribe_all(&mut sub).await;
    let mut away = Client::connect(&gateways[1].ws_url()).await.unwrap();
    subscribe_all(&mut away).await;
    let publisher_client = Client::connect(&gateways[1].ws_url()).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (last_tx, last_rx) = watch::channel(None);
    let publishing = tokio::spawn(publisher(publisher_client, stop_rx));
    let receiving = tokio::spawn(subscriber(sub, last_rx));

    // One client leaves before the change and comes back after it.
    let left = positions(&mut away).await;
    away.close().await.unwrap();
    static CHANGES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let tag = format!(
        "before-change-{}",
        CHANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let first = publish_keyed(&gateways[0], &tag).await;
    change().await;
    assert_eq!(
        publish_keyed(&gateways[1], &tag).await,
        first,
        "a retry after the hand-over was published again"
    );
    // Traffic goes on a while under the new ownership.
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop_tx.send_replace(true);
    let acked = publishing.await.unwrap();
    let last = acked
        .iter()
        .map(|(ch, rounds)| (ch.clone(), *rounds.last().unwrap()))
        .collect();
    last_tx.send_replace(Some(last));
    let frames = tokio::time::timeout(WAIT * 2, receiving)
        .await
        .expect("every acknowledged publication arrives")
        .unwrap();
    check_continuity(&frames, &acked, &epochs);
    recover(&gateways[0].ws_url(), &left, &acked).await;
}

async fn metrics(p: &Process) -> String {
    let addr = p.announced("http://").expect("http address");
    http::get(addr, "/metrics").await.unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_join_and_drain_without_losing_or_reordering() {
    let bin = Path::new(BIN);
    let b1 = broker(bin, "b1", None).await.unwrap();
    let seed = seed_of(&b1).unwrap();
    let mut brokers = vec![
        b1,
        broker(bin, "b2", Some(&seed)).await.unwrap(),
        broker(bin, "b3", Some(&seed)).await.unwrap(),
    ];
    let config = scenario_config("handoff").unwrap();
    let gateways = [
        gateway(bin, "g1", &seed, &config).await.unwrap(),
        gateway(bin, "g2", &seed, &config).await.unwrap(),
    ];

    // A fourth broker joins: the channels it now owns move to it.
    let before = Ring::new(["b1", "b2", "b3"]);
    let after = Ring::new(["b1", "b2", "b3", "b4"]);
    let moving = channels()
        .iter()
        .filter(|c| after.owner(c) != before.owner(c))
        .count();
    let keyed_moving = keyed_channels()
        .iter()
        .filter(|c| after.owner(c) != before.owner(c))
        .count();
    assert!(
        keyed_moving > 0
            && keyed_channels()
                .iter()
                .any(|c| after.owner(c) == Some("b1"))
    );
    assert!(
        moving > 0
            && channels().iter().all(|c| {
                let (b, a) = (before.owner(c), after.owner(c));
                b == a || a == Some("b4")
            })
    );
    let mut joined_in = Duration::ZERO;
    across(&gateways, || async {
        let started = Instant::now();
        let b4 = broker(bin, "b4", Some(&seed)).await.unwrap();
        let deadline = Instant::now() + WAIT * 2;
        loop {
            let taken = counter(
                &metrics(&b4).await,
                "switchboard_broker_handoffs_total{direction=\"in\"}",
            );
            if taken as usize >= moving {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "b4 took {taken} of {moving} channels"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        joined_in = started.elapsed();
        brokers.push(b4);
    })
    .await;
    println!(
        "join: b4 took {moving} of {CHANNELS} channels ({:.1}%) within {joined_in:?} of starting, nothing lost or reordered",
        100.0 * moving as f64 / CHANNELS as f64
    );

    // b1 drains on SIGTERM: it hands its channels over, then exits.
    let owned_by_b1 = channels()
        .iter()
        .filter(|c| after.owner(c) == Some("b1"))
        .count();
    let mut drained_in = Duration::ZERO;
    let mut b1 = brokers.remove(0);
    across(&gateways, || async {
        let started = Instant::now();
        let status = b1.terminate().await.unwrap();
        drained_in = started.elapsed();
        assert!(status.success(), "b1 exited with {status}:\n{}", b1.log());
        assert!(
            !b1.log().contains("drain deadline passed"),
            "b1 did not hand everything over:\n{}",
            b1.log()
        );
    })
    .await;
    println!(
        "drain: b1 handed over {owned_by_b1} channels and exited in {drained_in:?}, nothing lost or reordered"
    );
}
