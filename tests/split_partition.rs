//! A partial partition with `broker.lost_majority = "refuse"`, the default
//! (docs/replication.md "A lost majority"): broker b1 and gateway g2 on one
//! side, brokers b2, b3 and gateway g1 on the other, each side in a network
//! namespace (testkit::split), and the clients on the host reaching both
//! gateways. While the link between the sides is cut, clients publish on
//! every channel through both gateways. b1, the partitioned ex-owner of
//! some channels and cut off from a majority of every channel's voters,
//! gets nothing acknowledged; the other side goes on. After the heal every
//! publication acknowledged on either side is in the channel's history,
//! once, in the epoch it started in. (With `serve`, b1 serves its side
//! unreplicated and what it acknowledges is lost at the heal: in one run,
//! 558 publications acknowledged on the cut-off side, 622 lost in all.)
//! Needs root (network namespaces and iptables), as CI has.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_cluster::ring::Ring;
use switchboard_testkit::{
    certificates::ClusterCa,
    client::Client,
    cluster::{declared_down, publish_acknowledged, scenario_config, seed_of},
    partition::Partition,
    process::Process,
    split::Split,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const CUT: Duration = Duration::from_secs(10);

/// Starts `args` (a `switchboard` command line) inside `side`'s namespace.
async fn inside(side: &Partition, args: Vec<String>, scheme: &'static str) -> Process {
    let mut wrapped = vec!["netns".to_owned(), "exec".into(), side.name().into()];
    wrapped.push(BIN.into());
    wrapped.extend(args);
    let wrapped: Vec<&str> = wrapped.iter().map(String::as_str).collect();
    Process::start_announcing(Path::new("ip"), &wrapped, scheme)
        .await
        .unwrap()
}

async fn broker(side: &Partition, name: &str, seed: Option<&str>, config: &str) -> Process {
    let ip = side.ns_ip();
    let dir = std::env::temp_dir().join(format!("sb-split-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut args: Vec<String> = ["node", "--name", name].map(str::to_owned).to_vec();
    for flag in ["--grpc", "--http", "--gossip"] {
        args.extend([flag.to_owned(), format!("{ip}:0")]);
    }
    if let Some(seed) = seed {
        args.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    args.extend(["--data-dir".to_owned(), dir.to_str().unwrap().to_owned()]);
    args.extend(["--config".to_owned(), config.to_owned()]);
    args.extend(ClusterCa::shared().broker_args(name));
    inside(side, args, "grpc://").await
}

async fn gateway(side: &Partition, name: &str, seed: &str, config: &str) -> Process {
    let ip = side.ns_ip();
    let mut args: Vec<String> = ["gateway", "--name", name].map(str::to_owned).to_vec();
    for flag in ["--listen", "--gossip"] {
        args.extend([flag.to_owned(), format!("{ip}:0")]);
    }
    args.extend(["--seed", seed, "--config", config].map(str::to_owned));
    args.extend(ClusterCa::shared().gateway_args(name));
    inside(side, args, "ws://").await
}

/// One acknowledged publication: when it was sent, its data, offset and
/// epoch.
#[derive(Debug, Clone)]
struct Ack {
    sent: Instant,
    acked: Instant,
    data: String,
    offset: u64,
    epoch: String,
}

/// Publishes on `ch` through `url` until `until`, one at a time; returns
/// what was acknowledged.
async fn publish_until(url: String, side: &'static str, ch: String, until: Instant) -> Vec<Ack> {
    let mut c = Client::connect(&url).await.unwrap();
    let mut acks = Vec::new();
    for n in 0.. {
        if Instant::now() >= until {
            break;
        }
        let (sent, data) = (Instant::now(), format!("{side}-{n}"));
        let r = c
            .request(json!({"type": "publish", "channel": ch, "data": data}))
            .await
            .unwrap();
        if r["type"] == "response" {
            let offset = r["data"]["offset"].as_u64().unwrap();
            let epoch = r["data"]["epoch"].as_str().unwrap().to_owned();
            acks.push(Ack {
                sent,
                acked: Instant::now(),
                data,
                offset,
                epoch,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acks
}

/// Publishes `data` on `ch` until acknowledged; returns its epoch.
async fn acknowledged(c: &mut Client, ch: &str, data: &str) -> String {
    let reply = publish_acknowledged(c, ch, data).await.unwrap();
    reply["epoch"].as_str().unwrap().to_owned()
}

/// `ch`'s history through `c`: data by offset, and the epoch.
async fn history(c: &mut Client, ch: &str) -> (BTreeMap<u64, String>, String) {
    let r = c
        .request(json!({"type": "history", "channel": ch, "limit": 1000}))
        .await
        .unwrap();
    assert_eq!(r["type"], "response", "{ch}: {r}");
    let publications = r["data"]["publications"].as_array().unwrap();
    let by_offset = publications
        .iter()
        .map(|p| {
            let data = p["data"].as_str().unwrap_or_default().to_owned();
            (p["offset"].as_u64().unwrap(), data)
        })
        .collect();
    (by_offset, r["data"]["epoch"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_ex_owner_reached_by_a_gateway_gets_nothing_acknowledged() {
    // The default: `lost_majority` unset is "refuse".
    let config = scenario_config("split-broker").unwrap();
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains("lost_majority")
    );
    let mut split = Split::create().unwrap();
    let b1 = broker(&split.a, "b1", None, &config).await;
    let seed = seed_of(&b1).unwrap();
    let brokers = [
        b1,
        broker(&split.b, "b2", Some(&seed), &config).await,
        broker(&split.b, "b3", Some(&seed), &config).await,
    ];
    let gw_config = scenario_config("split-gw").unwrap();
    let g1 = gateway(&split.b, "g1", &seed, &gw_config).await;
    let g2 = gateway(&split.a, "g2", &seed, &gw_config).await;

    let ring = Ring::new(["b1", "b2", "b3"]);
    let channels: Vec<String> = (0..12).map(|i| format!("split:{i}")).collect();
    assert!(channels.iter().any(|c| ring.owner(c) == Some("b1")));
    let mut warm = [
        Client::connect(&g1.ws_url()).await.unwrap(),
        Client::connect(&g2.ws_url()).await.unwrap(),
    ];
    let mut epochs = HashMap::new();
    for ch in &channels {
        let epoch = acknowledged(&mut warm[0], ch, "first").await;
        assert_eq!(acknowledged(&mut warm[1], ch, "second").await, epoch);
        epochs.insert(ch.clone(), epoch);
    }

    // Both gateways' clients publish on every channel throughout: 2 s
    // joined, the cut, and 6 s after the heal.
    let start = Instant::now();
    let until = start + Duration::from_secs(2) + CUT + Duration::from_secs(6);
    let mut traffic = tokio::task::JoinSet::new();
    for ch in &channels {
        for (side, url) in [("b", g1.ws_url()), ("a", g2.ws_url())] {
            let ch = ch.clone();
            traffic.spawn(
                async move { (side, ch.clone(), publish_until(url, side, ch, until).await) },
            );
        }
    }
    tokio::time::sleep_until((start + Duration::from_secs(2)).into()).await;
    split.cut().unwrap();
    let cut = Instant::now();
    declared_down(&brokers[0], "b2").await.unwrap();
    declared_down(&brokers[1], "b1").await.unwrap();
    tokio::time::sleep_until((cut + CUT).into()).await;
    split.heal().unwrap();
    let healed = Instant::now();
    let mut acks: HashMap<(&str, String), Vec<Ack>> = HashMap::new();
    for (side, ch, list) in traffic.join_all().await {
        acks.insert((side, ch), list);
    }

    // What the cut-off side acknowledged while cut (sent once the cut was
    // half a second old, so not a commit already under way).
    let cut_off: Vec<(&String, &Ack)> = channels
        .iter()
        .flat_map(|ch| acks[&("a", ch.clone())].iter().map(move |a| (ch, a)))
        .filter(|(_, a)| a.sent > cut + Duration::from_millis(500) && a.acked < healed)
        .collect();
    let spanning: Vec<(Duration, Duration)> = channels
        .iter()
        .flat_map(|ch| acks[&("a", ch.clone())].iter())
        .filter(|a| a.sent > cut && a.sent < healed)
        .map(|a| (a.sent - cut, a.acked - cut))
        .collect();
    println!(
        "the cut-off side's publications sent while cut and acknowledged (sent, acknowledged after the cut): {spanning:?}"
    );
    let majority: usize = channels
        .iter()
        .map(|ch| {
            acks[&("b", ch.clone())]
                .iter()
                .filter(|a| a.sent > cut && a.sent < healed)
                .count()
        })
        .sum();

    // After the heal, every channel takes publications on both sides, and
    // its history holds every acknowledged publication once, in its epoch.
    let (mut lost, mut moved) = (Vec::new(), Vec::new());
    for ch in &channels {
        for c in &mut warm {
            acknowledged(c, ch, "settled").await;
        }
        let (held, epoch) = history(&mut warm[0], ch).await;
        if epoch != epochs[ch] {
            moved.push(ch.clone());
        }
        for side in ["a", "b"] {
            for a in &acks[&(side, ch.clone())] {
                if a.epoch != epoch || held.get(&a.offset) != Some(&a.data) {
                    lost.push((ch.clone(), a.clone(), held.get(&a.offset).cloned()));
                }
            }
        }
    }
    println!(
        "cut {CUT:?}: the majority's side acknowledged {majority}, the cut-off side {}; lost {}; epoch changed on {}",
        cut_off.len(),
        lost.len(),
        moved.len()
    );
    assert!(majority > 0, "the majority's side acknowledged nothing");
    if !lost.is_empty() {
        let lost_channels: std::collections::BTreeSet<&String> =
            lost.iter().map(|l| &l.0).collect();
        for (b, name) in brokers.iter().zip(["b1", "b2", "b3"]) {
            let log = b.log();
            for ch in &lost_channels {
                let needle = format!("channel={ch} ");
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
                eprintln!("=== {name} on {ch}\n{}", lines.join("\n"));
            }
        }
        eprintln!("cut at {cut:?}, healed at {healed:?}");
    }
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    assert!(moved.is_empty(), "the epoch changed on {moved:?}");
    let after_cut = |t: Instant| t.saturating_duration_since(cut);
    let cut_off: Vec<_> = cut_off
        .iter()
        .map(|(ch, a)| (ch, &a.data, after_cut(a.sent), after_cut(a.acked)))
        .collect();
    assert!(
        cut_off.is_empty(),
        "acknowledged on the cut-off side (channel, data, sent and acknowledged after the cut): {cut_off:?}"
    );
    drop((g1, g2, brokers));
}
