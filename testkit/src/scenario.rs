//! Fault scenarios under steady publishing (issue 13): brokers and two
//! gateways as real processes ([`Fleet`]), one publisher per channel on
//! the server API with acknowledged ids and idempotent retries, two
//! subscribers that stay connected (one per gateway) and two that go away
//! before the fault and come back after it with `since` (each on the
//! other gateway), one [`Fault`], a quiet period, then the
//! [`Checker`]'s report, the failover times and the publish errors.

use std::{collections::BTreeMap, path::Path, time::Duration};

use tokio::{sync::watch, time::Instant};

use crate::{
    checker::{Checker, Report},
    fault::{Fault, Moment},
    fleet::{BrokerArgs, Fleet},
    partition::Partition,
    traffic::{Published, Subscriber, Timeline, Until, publish},
};

/// One scenario's shape.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Names its channels (`NAME:0`, `NAME:1`, …) and its idempotency keys.
    pub name: String,
    pub brokers: usize,
    pub channels: usize,
    /// Publications per second on each channel.
    pub rate: f64,
    /// Publishing before the away clients leave and the fault starts.
    pub warmup: Duration,
    /// Publishing after the fault is over, before the away clients come
    /// back, and again after, before publishing stops.
    pub quiet: Duration,
    pub fault: Fault,
    /// Extra arguments for each broker, by name (see [`BrokerArgs`]).
    pub broker_args: Option<BrokerArgs>,
}

impl Scenario {
    /// 3 brokers, 12 channels at 4 publications/s each (48/s), 1.5 s of
    /// warm-up and 2 s quiet periods.
    pub fn new(name: &str, fault: Fault) -> Self {
        Self {
            name: name.to_owned(),
            brokers: 3,
            channels: 12,
            rate: 4.0,
            warmup: Duration::from_millis(1500),
            quiet: Duration::from_secs(2),
            fault,
            broker_args: None,
        }
    }
}

/// What a scenario measured.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub report: Report,
    pub moments: Vec<Moment>,
    /// Per moved channel and moment: the time from the moment to the first
    /// acknowledged publish sent after it; `None`: none was.
    pub failover: Vec<Option<Duration>>,
    /// Failed publish attempts by `STATUS code`, `timeout` or `transport`.
    pub publish_errors: BTreeMap<String, usize>,
    /// Publications given up at their deadline.
    pub abandoned: usize,
    /// Subscribers whose connection failed, and why.
    pub closed: Vec<(String, String)>,
    /// Everything the checker was fed, in order.
    pub timeline: Timeline,
    /// The logs of the processes still running at the end, by name.
    pub logs: Vec<(String, String)>,
}

impl Outcome {
    fn resumed(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.failover.iter().flatten().copied().collect();
        v.sort();
        v
    }

    pub fn failover_max(&self) -> Option<Duration> {
        self.resumed().last().copied()
    }

    pub fn failover_median(&self) -> Option<Duration> {
        let v = self.resumed();
        v.get(v.len() / 2).copied()
    }

    /// Moved channels that never had a publish acknowledged after the moment.
    pub fn never_resumed(&self) -> usize {
        self.failover.iter().filter(|f| f.is_none()).count()
    }

    /// The timeline of one channel, one event a line, for a failure message.
    pub fn trace(&self, channel: &str) -> String {
        let start = self.timeline.first().map(|(at, _)| *at);
        self.timeline
            .iter()
            .filter(|(_, e)| e.channel() == channel)
            .map(|(at, e)| {
                let t = start.map_or(0.0, |s| (*at - s).as_secs_f64());
                format!("{t:8.3} {e:?}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A row of the baseline table in docs/replication.md.
    pub fn row(&self) -> String {
        let t = &self.report.total;
        let secs =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64()));
        let counted = |m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                return "0".to_owned();
            }
            let e: Vec<String> = m.iter().map(|(k, n)| format!("{n}× {k}")).collect();
            e.join(", ")
        };
        let errors = counted(&self.publish_errors);
        let refused = counted(&t.errors.iter().map(|(c, n)| (c.to_string(), *n)).collect());
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} s | {} | {} |",
            self.scenario.fault.label(),
            t.acknowledged,
            t.missing,
            t.lost_announced,
            t.duplicates,
            t.reorders,
            t.silent_gaps,
            t.resets_to_ended_epoch,
            t.rewinds,
            t.resubscribed,
            t.recovered_false,
            t.recovered_true,
            secs(self.failover_median()),
            secs(self.failover_max()),
            errors,
            refused,
        )
    }
}

/// The header of [`Outcome::row`]'s table.
pub const TABLE_HEADER: &str = "| Fault | Acked | Missing | Lost (announced) | Duplicates | Reorders | Silent gaps | Resets to ended epoch | Rewinds | `resubscribed` | `recovered: false` | `recovered: true` | Failover median/max | Publish errors | Resubscribe errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// Runs `scenario` against the `switchboard` binary `bin`.
pub async fn run(bin: &Path, scenario: &Scenario) -> anyhow::Result<Outcome> {
    let partition = scenario
        .fault
        .needs_partition()
        .then(Partition::create)
        .transpose()?;
    let mut fleet = Fleet::start(bin, scenario.brokers, scenario.broker_args, partition).await?;
    let channels: Vec<String> = (0..scenario.channels)
        .map(|i| format!("{}:{i}", scenario.name))
        .collect();
    let urls = fleet.ws_urls();
    let (until, until_rx) = watch::channel(Until::Running);
    let (leave, leave_rx) = watch::channel(Until::Running);
    let mut staying = Vec::new();
    let mut away = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        staying.push(listening(url, &format!("stay{}", i + 1), &channels, &until_rx).await?);
        away.push(listening(url, &format!("away{}", i + 1), &channels, &leave_rx).await?);
    }
    let (stop, stop_rx) = watch::channel(false);
    let period = Duration::from_secs_f64(1.0 / scenario.rate);
    let publishers: Vec<_> = channels
        .iter()
        .map(|ch| {
            let task = publish(
                fleet.gateway_addrs(),
                ch.clone(),
                scenario.name.clone(),
                period,
                stop_rx.clone(),
            );
            tokio::spawn(task)
        })
        .collect();

    // The phases are paced by the scenario's clock: publishing goes on
    // throughout, and these are its durations, not waits for a condition.
    tokio::time::sleep(scenario.warmup).await;
    leave.send_replace(Until::Leave);
    let mut gone = Vec::new();
    for a in away {
        gone.push(a.await?);
    }
    let moments = scenario.fault.inject(&mut fleet, &channels).await?;
    tokio::time::sleep(scenario.quiet).await;
    let mut back = Vec::new();
    for (i, s) in gone.into_iter().enumerate() {
        let s = coming_back(&fleet, s, &urls[(i + 1) % urls.len()]).await?;
        back.push(tokio::spawn(s.listen(until_rx.clone())));
    }
    tokio::time::sleep(scenario.quiet).await;

    stop.send_replace(true);
    let mut published = Vec::new();
    for p in publishers {
        published.push(p.await?);
    }
    let last = channels
        .iter()
        .zip(&published)
        .filter_map(|(ch, p)| Some((ch.clone(), p.last_id?)))
        .collect();
    until.send_replace(Until::Caught(last));
    let mut subscribers = Vec::new();
    for s in staying.into_iter().chain(back) {
        subscribers.push(s.await?);
    }
    let mut outcome = judge(scenario, &channels, moments, published, subscribers);
    outcome.logs = fleet.logs();
    Ok(outcome)
}

/// `s` back on `url` ([`Subscriber::come_back`]); if it cannot, the
/// processes' logs are what tells why: printed with the failure, so that
/// a run in CI can be diagnosed afterwards.
async fn coming_back(fleet: &Fleet, s: Subscriber, url: &str) -> anyhow::Result<Subscriber> {
    let back = s.come_back(url).await;
    if back.is_err() {
        for (name, log) in fleet.logs() {
            eprintln!("==== {name}\n{log}");
        }
    }
    back
}

/// A subscriber to every channel, listening until `until` says stop.
async fn listening(
    url: &str,
    name: &str,
    channels: &[String],
    until: &watch::Receiver<Until>,
) -> anyhow::Result<tokio::task::JoinHandle<Subscriber>> {
    let s = Subscriber::subscribe_all(url, name, channels).await?;
    Ok(tokio::spawn(s.listen(until.clone())))
}

fn judge(
    scenario: &Scenario,
    channels: &[String],
    moments: Vec<Moment>,
    published: Vec<Published>,
    subscribers: Vec<Subscriber>,
) -> Outcome {
    let mut timeline: Timeline = Vec::new();
    let mut publish_errors = BTreeMap::new();
    let mut abandoned = 0;
    for p in &published {
        timeline.extend(p.timeline.iter().cloned());
        for (k, n) in &p.errors {
            *publish_errors.entry(k.clone()).or_default() += n;
        }
        abandoned += p.abandoned;
    }
    let mut closed = Vec::new();
    for s in subscribers {
        timeline.extend(s.timeline);
        if let Some(why) = s.closed {
            closed.push((s.name, why));
        }
    }
    timeline.sort_by_key(|(at, _)| *at);
    let mut checker = Checker::new();
    for (_, event) in &timeline {
        checker.feed(event.clone());
    }
    let acks: BTreeMap<&String, &Vec<(Instant, Instant)>> = channels
        .iter()
        .zip(published.iter().map(|p| &p.acks))
        .collect();
    let failover = moments
        .iter()
        .flat_map(|m| {
            m.channels.iter().map(|ch| {
                acks.get(ch)?
                    .iter()
                    .find(|(sent, _)| *sent >= m.at)
                    .map(|(_, acked)| *acked - m.at)
            })
        })
        .collect();
    Outcome {
        scenario: scenario.clone(),
        report: checker.report(),
        moments,
        failover,
        publish_errors,
        abandoned,
        closed,
        timeline,
        logs: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(moments: Vec<Moment>, published: Vec<Published>) -> Outcome {
        let scenario = Scenario::new("t", Fault::Kill);
        let channels = vec!["t:0".to_owned(), "t:1".to_owned()];
        judge(&scenario, &channels, moments, published, Vec::new())
    }

    #[test]
    fn failover_is_the_first_acknowledged_publish_sent_after_the_moment() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let moment = Moment {
            at: ms(1000),
            what: "kill -9 b2".into(),
            channels: vec!["t:0".into(), "t:1".into()],
        };
        let moved = Published {
            // Sent before the moment and answered after it: not counted.
            acks: vec![(ms(900), ms(1100)), (ms(3000), ms(3500))],
            errors: BTreeMap::from([("503 unavailable".to_owned(), 3)]),
            ..Published::default()
        };
        let stuck = Published {
            acks: vec![(ms(500), ms(600))],
            abandoned: 1,
            ..Published::default()
        };
        let o = outcome(vec![moment], vec![moved, stuck]);
        assert_eq!(o.failover, vec![Some(Duration::from_millis(2500)), None]);
        assert_eq!(o.failover_max(), Some(Duration::from_millis(2500)));
        assert_eq!(o.never_resumed(), 1);
        assert_eq!(o.publish_errors["503 unavailable"], 3);
        assert_eq!(o.abandoned, 1);
        assert!(
            o.row().starts_with("| kill -9 of an owner | 0 |"),
            "{}",
            o.row()
        );
    }
}
