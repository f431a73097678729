//! The traffic of a fault scenario, recorded for the [`crate::checker`]:
//! one publisher per channel on the server API, publishing `{"id": n}`
//! with rising `n` at a steady rate, one publication in flight, each
//! retried with its idempotency key (alternating gateways) until acknowledged or
//! its deadline passes; and WebSocket subscribers whose every frame about
//! a channel becomes a timestamped checker event.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::Duration,
};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior},
};

use crate::{
    WAIT,
    api::Http,
    checker::{Delivery, Event, Position, Recovery},
    client::Client,
};

/// Events as they happened.
pub type Timeline = Vec<(Instant, Event)>;

/// How long one publish attempt may take before it is retried: short
/// against failover times under 1 s, long against a loaded machine.
const ATTEMPT: Duration = Duration::from_secs(1);
/// How long a publication is retried before the publisher gives up on it.
const DEADLINE: Duration = Duration::from_secs(10);
const API_KEY: &str = "switchboard-dev-api-key";

/// What one channel's publisher did.
#[derive(Debug, Default)]
pub struct Published {
    pub timeline: Timeline,
    /// Per acknowledged publication: when its acknowledged attempt was
    /// sent, and when the answer came.
    pub acks: Vec<(Instant, Instant)>,
    /// Failed attempts by `STATUS code` (or `timeout`, `transport`).
    pub errors: BTreeMap<String, usize>,
    /// Publications given up at their deadline.
    pub abandoned: usize,
    pub last_id: Option<u64>,
}

/// Publishes to `channel` through `gateways` every `period` until `stop`.
pub async fn publish(
    gateways: Vec<SocketAddr>,
    channel: String,
    run: String,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> Published {
    let apis: Vec<Http> = gateways
        .iter()
        .map(|a| Http::new(*a, Some(API_KEY)))
        .collect();
    let mut out = Published::default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    for id in 1u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let body = json!({"channel": channel, "data": {"id": id},
                          "idempotency_key": format!("{run}:{channel}:{id}")});
        let first = Instant::now();
        for attempt in 0usize.. {
            let api = &apis[(id as usize + attempt) % apis.len()];
            let sent = Instant::now();
            let failure =
                match tokio::time::timeout(ATTEMPT, api.call("publish", body.clone())).await {
                    Ok(Ok(r)) if r.status == 200 => match position(&r.body) {
                        Some(position) => {
                            let at = Instant::now();
                            out.acks.push((sent, at));
                            out.last_id = Some(id);
                            let channel = channel.clone();
                            let event = Event::Acknowledged {
                                channel,
                                id,
                                position,
                            };
                            out.timeline.push((at, event));
                            break;
                        }
                        None => "200 without a position".to_owned(),
                    },
                    Ok(Ok(r)) => format!("{} {}", r.status, r.error_code()),
                    Ok(Err(_)) => "transport".to_owned(),
                    Err(_) => "timeout".to_owned(),
                };
            *out.errors.entry(failure).or_default() += 1;
            if first.elapsed() > DEADLINE {
                out.abandoned += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    out
}

fn position(v: &Value) -> Option<Position> {
    Some(Position::new(v["epoch"].as_str()?, v["offset"].as_u64()?))
}

fn delivery(frame: &Value) -> Option<Delivery> {
    Some(Delivery {
        id: frame["data"]["id"].as_u64()?,
        position: position(frame)?,
    })
}

/// The checker's event for a frame a subscriber received, if it is about
/// a channel's continuity (messages of scenario publishers, `resubscribed`).
pub fn observe(subscriber: &str, frame: &Value) -> Option<Event> {
    let subscriber = subscriber.to_owned();
    let channel = frame["channel"].as_str()?.to_owned();
    match frame["type"].as_str()? {
        "message" => Some(Event::Delivered {
            subscriber,
            channel,
            delivery: delivery(frame)?,
        }),
        "resubscribed" => Some(Event::Resubscribed {
            subscriber,
            channel,
            position: position(frame)?,
        }),
        _ => None,
    }
}

/// When a subscriber stops listening.
#[derive(Clone, Debug)]
pub enum Until {
    Running,
    /// Now: it is about to go away.
    Leave,
    /// Once it has received these ids (the last acknowledged per
    /// channel), or [`WAIT`] after being told.
    Caught(HashMap<String, u64>),
}

/// A WebSocket subscriber that records what it sees.
pub struct Subscriber {
    pub name: String,
    pub client: Client,
    pub timeline: Timeline,
    /// The highest id received per channel.
    seen: HashMap<String, u64>,
    /// Why it stopped listening early, if the connection failed.
    pub closed: Option<String>,
}

impl Subscriber {
    /// Connects to `url` and subscribes to every channel (asking again
    /// while the cluster routes nothing yet).
    pub async fn subscribe_all(url: &str, name: &str, channels: &[String]) -> anyhow::Result<Self> {
        let mut s = Self::connect(url, name).await?;
        for ch in channels {
            let data = crate::cluster::subscribe_once_routed(&mut s.client, ch).await?;
            let event = Event::Subscribed {
                subscriber: s.name.clone(),
                channel: ch.clone(),
                position: position(&data).context("subscribe reply has a position")?,
                recovery: None,
            };
            s.timeline.push((Instant::now(), event));
        }
        Ok(s)
    }

    async fn connect(url: &str, name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            client: Client::connect(url).await?,
            timeline: Vec::new(),
            seen: HashMap::new(),
            closed: None,
        })
    }

    fn record(&mut self, event: Event) {
        if let Event::Delivered {
            channel, delivery, ..
        } = &event
        {
            let seen = self.seen.entry(channel.clone()).or_default();
            *seen = (*seen).max(delivery.id);
        }
        self.timeline.push((Instant::now(), event));
    }

    /// Records every frame until `until` says stop.
    pub async fn listen(mut self, mut until: watch::Receiver<Until>) -> Self {
        let mut deadline: Option<Instant> = None;
        loop {
            let done = match &*until.borrow_and_update() {
                Until::Running => false,
                Until::Leave => true,
                Until::Caught(last) => {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + WAIT);
                    Instant::now() >= d
                        || last
                            .iter()
                            .all(|(ch, n)| self.seen.get(ch).is_some_and(|s| s >= n))
                }
            };
            if done {
                return self;
            }
            let wake = deadline.unwrap_or_else(|| Instant::now() + WAIT);
            tokio::select! {
                frame = self.client.next() => match frame {
                    Ok(frame) => {
                        if let Some(event) = observe(&self.name, &frame) {
                            self.record(event);
                        }
                    }
                    // A quiet spell: the wait inside `next` ran out.
                    Err(e) if e.to_string().contains("within the wait") => {}
                    Err(e) => {
                        self.closed = Some(format!("{e:#}"));
                        return self;
                    }
                },
                _ = until.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Where this subscriber stands on each channel: the position a client
    /// remembers for `since`.
    pub fn positions(&self) -> HashMap<String, Position> {
        let mut at = HashMap::new();
        for (_, event) in &self.timeline {
            let (channel, pos) = match event {
                Event::Subscribed {
                    channel, position, ..
                }
                | Event::Resubscribed {
                    channel, position, ..
                } => (channel, position),
                Event::Delivered {
                    channel, delivery, ..
                } => (channel, &delivery.position),
                _ => continue,
            };
            at.insert(channel.clone(), pos.clone());
        }
        at
    }

    /// Comes back, as a client that was away, on a new connection to
    /// `url`: subscribes to each channel with `since` its last position
    /// (asking again, within two [`WAIT`]s, while that fails).
    pub async fn come_back(self, url: &str) -> anyhow::Result<Self> {
        let since = self.positions();
        let timeline = self.timeline;
        let mut s = Self::connect(url, &self.name).await?;
        s.timeline = timeline;
        s.seen = self.seen;
        let mut channels: Vec<&String> = since.keys().collect();
        channels.sort();
        for ch in channels {
            s.recover(ch, &since[ch]).await?;
        }
        Ok(s)
    }

    async fn recover(&mut self, ch: &str, since: &Position) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT * 2;
        loop {
            let r = self
                .client
                .request(json!({"type": "subscribe", "channel": ch,
                    "since": {"offset": since.offset, "epoch": since.epoch}}))
                .await?;
            if r["type"] == "response" {
                let data = &r["data"];
                let recovery = Recovery {
                    recovered: data["recovered"] == true,
                    publications: data["publications"]
                        .as_array()
                        .map(|ps| ps.iter().filter_map(delivery).collect())
                        .unwrap_or_default(),
                };
                self.record(Event::Subscribed {
                    subscriber: self.name.clone(),
                    channel: ch.to_owned(),
                    position: position(data).context("subscribe reply has a position")?,
                    recovery: Some(recovery.clone()),
                });
                for d in recovery.publications {
                    let seen = self.seen.entry(ch.to_owned()).or_default();
                    *seen = (*seen).max(d.id);
                }
                return Ok(());
            }
            self.record(Event::Error {
                subscriber: self.name.clone(),
                channel: ch.to_owned(),
                code: r["code"].as_u64().unwrap_or_default() as u16,
            });
            anyhow::ensure!(Instant::now() < deadline, "{ch} never resubscribed: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
