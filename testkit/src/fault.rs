//! The faults a scenario injects into a running [`Fleet`], each returning
//! the moments channels lost (or changed) their owner, from which the
//! scenario measures failover: the time to the first acknowledged publish
//! sent after the moment, on each channel that moved.

use std::time::Duration;

use anyhow::Context;
use switchboard_cluster::ring::Ring;
use tokio::time::Instant;

use crate::{WAIT, cluster::counter, fleet::Fleet, http};

/// One fault.
#[derive(Clone, Debug)]
pub enum Fault {
    /// `kill -9` of the owner of the first channel.
    Kill,
    /// `kill -9` of the owner of the first channel, started again under
    /// the same name at the same addresses after `down`.
    KillRestart { down: Duration },
    /// SIGSTOP of the owner of the first channel for `frozen` (longer
    /// than failure detection), then SIGCONT.
    Freeze { frozen: Duration },
    /// The last broker, run in a network namespace, cut off for `cut`,
    /// then healed.
    Partition { cut: Duration },
    /// Every broker in turn: SIGTERM (it drains), exit, started again.
    RollingRestart,
    /// A broker joins, takes its channels, then another drains (SIGTERM).
    JoinAndDrain,
    /// `kill -9` of the first `replicas` brokers of the first channel's
    /// failover order at once: its whole replica set (with R = 1, only
    /// its owner would be the set; 2 is issue 13's default R).
    KillReplicas { replicas: usize },
}

/// When channels lost their owner, or changed it.
#[derive(Clone, Debug)]
pub struct Moment {
    pub at: Instant,
    pub what: String,
    pub channels: Vec<String>,
}

impl Fault {
    /// A short name for tables.
    pub fn label(&self) -> String {
        match self {
            Fault::Kill => "kill -9 of an owner".into(),
            Fault::KillRestart { down } => format!("kill -9, restart after {down:?}"),
            Fault::Freeze { frozen } => format!("SIGSTOP {frozen:?}, SIGCONT"),
            Fault::Partition { cut } => format!("partition {cut:?}, healed"),
            Fault::RollingRestart => "rolling restart".into(),
            Fault::JoinAndDrain => "join b4, drain b1".into(),
            Fault::KillReplicas { replicas } => format!("kill -9 of {replicas} replicas"),
        }
    }

    /// Whether the fleet needs a network namespace for its last broker.
    pub fn needs_partition(&self) -> bool {
        matches!(self, Fault::Partition { .. })
    }

    /// Injects the fault and returns once it is over (the broker back,
    /// the partition healed, the drain done).
    pub async fn inject(
        &self,
        fleet: &mut Fleet,
        channels: &[String],
    ) -> anyhow::Result<Vec<Moment>> {
        let owners = Owners {
            ring: fleet.ring(),
            channels,
        };
        let first = channels.first().context("no channels")?;
        let owner = owners.ring.owner(first).context("empty ring")?.to_owned();
        let mut moments = Vec::new();
        match self {
            Fault::Kill => {
                moments.push(owners.moment("kill -9", &[&owner]));
                fleet.kill(&owner).await?;
            }
            Fault::KillRestart { down } => {
                let ups = fleet.ups(&owner);
                moments.push(owners.moment("kill -9", &[&owner]));
                fleet.kill(&owner).await?;
                tokio::time::sleep(*down).await;
                moments.push(owners.moment("restart", &[&owner]));
                fleet.start_broker(&owner).await?;
                fleet.wait_up(&owner, &ups).await?;
            }
            Fault::Freeze { frozen } => {
                moments.push(owners.moment("SIGSTOP", &[&owner]));
                fleet.broker(&owner)?.freeze()?;
                tokio::time::sleep(*frozen).await;
                fleet.broker(&owner)?.thaw()?;
            }
            Fault::Partition { cut } => {
                let victim = fleet.running().last().context("no broker")?.clone();
                moments.push(owners.moment("cut off", &[&victim]));
                fleet.partition.as_mut().context("no namespace")?.cut()?;
                tokio::time::sleep(*cut).await;
                fleet.partition.as_mut().context("no namespace")?.heal()?;
            }
            Fault::RollingRestart => moments = rolling_restart(fleet, &owners).await?,
            Fault::JoinAndDrain => moments = join_and_drain(fleet, channels).await?,
            Fault::KillReplicas { replicas } => {
                let set: Vec<&str> = owners.ring.failover(first).take(*replicas).collect();
                moments.push(owners.moment("kill -9", &set));
                for name in &set {
                    fleet.kill(name).await?;
                }
            }
        }
        Ok(moments)
    }
}

/// Who owned which channel when the fault began.
struct Owners<'a> {
    ring: Ring,
    channels: &'a [String],
}

impl Owners<'_> {
    fn owned_by(&self, names: &[&str]) -> Vec<String> {
        self.channels
            .iter()
            .filter(|c| self.ring.owner(c).is_some_and(|o| names.contains(&o)))
            .cloned()
            .collect()
    }

    /// Now, `what` happens to `names`: their channels move.
    fn moment(&self, what: &str, names: &[&str]) -> Moment {
        Moment {
            at: Instant::now(),
            what: format!("{what} {}", names.join(" and ")),
            channels: self.owned_by(names),
        }
    }
}

/// Every broker in turn: SIGTERM, exit, started again, and its channels
/// taken back before the next.
async fn rolling_restart(fleet: &mut Fleet, owners: &Owners<'_>) -> anyhow::Result<Vec<Moment>> {
    let mut moments = Vec::new();
    for name in fleet.running() {
        let ups = fleet.ups(&name);
        moments.push(owners.moment("SIGTERM", &[&name]));
        fleet.stop(&name).await?;
        moments.push(owners.moment("restart", &[&name]));
        fleet.start_broker(&name).await?;
        fleet.wait_up(&name, &ups).await?;
        taken_back(fleet, &name, owners.owned_by(&[&name]).len()).await?;
    }
    Ok(moments)
}

/// `b4` joins and takes its channels (its handoff counter says so), then
/// `b1` drains on SIGTERM.
async fn join_and_drain(fleet: &mut Fleet, channels: &[String]) -> anyhow::Result<Vec<Moment>> {
    let before = fleet.ring();
    let mut names = fleet.running();
    names.push("b4".into());
    let after = Ring::new(names);
    let moving: Vec<String> = channels
        .iter()
        .filter(|c| before.owner(c) != after.owner(c))
        .cloned()
        .collect();
    fleet.plan("b4", None)?;
    let mut moments = vec![Moment {
        at: Instant::now(),
        what: "b4 joins".into(),
        channels: moving.clone(),
    }];
    fleet.start_broker("b4").await?;
    fleet.wait_up("b4", &[0, 0]).await?;
    taken_back(fleet, "b4", moving.len()).await?;
    moments.push(Moment {
        at: Instant::now(),
        what: "SIGTERM b1".into(),
        channels: channels
            .iter()
            .filter(|c| after.owner(c) == Some("b1"))
            .cloned()
            .collect(),
    });
    fleet.stop("b1").await?;
    Ok(moments)
}

/// Waits until broker `name` has taken `n` channels from their previous
/// owners (its handoff counter says so), as an operator waits for a
/// broker to be back in service before stopping the next.
async fn taken_back(fleet: &Fleet, name: &str, n: usize) -> anyhow::Result<()> {
    let addr = fleet.spec(name)?.http_addr();
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let metrics = http::get(addr, "/metrics").await?.1;
        let taken = counter(
            &metrics,
            "switchboard_broker_handoffs_total{direction=\"in\"}",
        );
        if taken as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name} took {taken} of {n} channels"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
