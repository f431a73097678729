//! Steady publishing load with a continuity check: a publisher publishes
//! `{"n": round}` to every channel every 100 ms through one gateway while a
//! subscriber on another records what arrives; at the end every
//! acknowledged round must have arrived once, in order, in the epoch the
//! subscription started in (no `resubscribed`).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

use crate::{WAIT, client::Client, cluster::subscribe_once_routed};

/// Load running across a change.
pub struct Load {
    channels: Vec<String>,
    epochs: HashMap<String, String>,
    stop: watch::Sender<bool>,
    last: watch::Sender<Option<HashMap<String, u64>>>,
    publishing: JoinHandle<anyhow::Result<HashMap<String, Vec<u64>>>>,
    receiving: JoinHandle<anyhow::Result<Vec<Value>>>,
}

/// What a finished load delivered.
#[derive(Debug)]
pub struct Delivered {
    /// Acknowledged publications, over all channels.
    pub acknowledged: usize,
}

impl Load {
    /// Subscribes through `sub_url` to every channel, then starts
    /// publishing through `pub_url`.
    pub async fn start(
        sub_url: &str,
        pub_url: &str,
        channels: Vec<String>,
    ) -> anyhow::Result<Self> {
        let mut sub = Client::connect(sub_url).await?;
        let mut epochs = HashMap::new();
        for ch in &channels {
            let r = subscribe_once_routed(&mut sub, ch).await?;
            let epoch = r["epoch"]
                .as_str()
                .context("subscribe reply has an epoch")?;
            epochs.insert(ch.clone(), epoch.to_owned());
        }
        let publisher = Client::connect(pub_url).await?;
        let (stop, stop_rx) = watch::channel(false);
        let (last, last_rx) = watch::channel(None);
        let publishing = tokio::spawn(publish(publisher, channels.clone(), stop_rx));
        let receiving = tokio::spawn(receive(sub, last_rx));
        Ok(Self {
            channels,
            epochs,
            stop,
            last,
            publishing,
            receiving,
        })
    }

    /// Stops publishing, waits for the last acknowledged round of every
    /// channel, and checks continuity.
    pub async fn finish(self) -> anyhow::Result<Delivered> {
        self.stop.send_replace(true);
        let acked = self.publishing.await??;
        let last = acked
            .iter()
            .filter_map(|(ch, rounds)| Some((ch.clone(), *rounds.last()?)))
            .collect();
        self.last.send_replace(Some(last));
        let frames = tokio::time::timeout(WAIT * 2, self.receiving)
            .await
            .context("not every acknowledged publication arrived")???;
        check(&frames, &acked, &self.epochs)?;
        ensure!(
            self.channels.iter().all(|ch| acked.contains_key(ch)),
            "some channel had no publication acknowledged"
        );
        Ok(Delivered {
            acknowledged: acked.values().map(Vec::len).sum(),
        })
    }
}

async fn publish(
    mut client: Client,
    channels: Vec<String>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<HashMap<String, Vec<u64>>> {
    let mut acked: HashMap<String, Vec<u64>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for round in 1.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(acked),
        }
        for ch in &channels {
            let deadline = Instant::now() + WAIT;
            loop {
                let r = client
                    .request(json!({"type": "publish", "channel": ch, "data": {"n": round}}))
                    .await?;
                if r["type"] == "response" {
                    acked.entry(ch.clone()).or_default().push(round);
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "publish to {ch} kept failing: {r}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    unreachable!("rounds are unbounded")
}

async fn receive(
    mut client: Client,
    mut last: watch::Receiver<Option<HashMap<String, u64>>>,
) -> anyhow::Result<Vec<Value>> {
    let mut frames = Vec::new();
    let mut newest: HashMap<String, u64> = HashMap::new();
    loop {
        let done = last.borrow_and_update().as_ref().is_some_and(|last| {
            last.iter()
                .all(|(ch, n)| newest.get(ch).is_some_and(|seen| seen >= n))
        });
        if done {
            return Ok(frames);
        }
        tokio::select! {
            frame = client.next() => {
                let frame = frame.context("the subscriber's connection held")?;
                if frame["type"] == "message" {
                    let ch = frame["channel"].as_str().unwrap_or_default().to_owned();
                    newest.insert(ch, frame["data"]["n"].as_u64().unwrap_or_default());
                }
                frames.push(frame);
            }
            _ = last.changed() => {}
        }
    }
}

fn check(
    frames: &[Value],
    acked: &HashMap<String, Vec<u64>>,
    epochs: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let resets: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "resubscribed")
        .collect();
    ensure!(resets.is_empty(), "continuity lost: {resets:?}");
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    let mut offsets: HashMap<String, u64> = HashMap::new();
    for f in frames.iter().filter(|f| f["type"] == "message") {
        let ch = f["channel"].as_str().unwrap_or_default().to_owned();
        ensure!(
            f["epoch"].as_str() == epochs.get(&ch).map(String::as_str),
            "epoch changed: {f}"
        );
        let offset = f["offset"].as_u64().context("message has an offset")?;
        let prev = offsets.insert(ch.clone(), offset);
        ensure!(
            prev.is_none_or(|p| offset == p + 1),
            "{ch}: offset {offset} after {prev:?} (a gap or a repeat)"
        );
        got.entry(ch)
            .or_default()
            .push(f["data"]["n"].as_u64().unwrap_or_default());
    }
    for (ch, want) in acked {
        let got = got.get(ch).cloned().unwrap_or_default();
        ensure!(got.windows(2).all(|w| w[0] < w[1]), "{ch}: {got:?}");
        let lost: Vec<&u64> = want.iter().filter(|n| !got.contains(n)).collect();
        ensure!(
            lost.is_empty(),
            "{ch}: acknowledged but never delivered: {lost:?}"
        );
    }
    Ok(())
}
