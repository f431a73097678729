//! Issue 13's fault scenarios, under steady publishing with a checker per
//! channel (testkit::scenario): 3 brokers, 2 gateways, 12 channels at
//! 4 acknowledged publications/s each, subscribers that stay and clients
//! that come back with `since`, one fault each.
//!
//! Today (no replication) each scenario asserts the part of what
//! docs/operations.md promises that held in every measured run; the
//! `todays_*` functions name what they leave out, and why (bugs the
//! scenarios found, in docs/replication.md's baseline). [`issue_13_promise`]
//! is issue 13's full promise; every scenario switches to it when
//! [`REPLICATION`] is set, once replication lands. Each scenario prints its row of the baseline
//! table in docs/replication.md:
//! `cargo test --test fault_scenarios -- --nocapture --test-threads=1`.

use std::{path::Path, time::Duration};

use switchboard_testkit::{
    fault::Fault,
    scenario::{Outcome, Scenario, TABLE_HEADER, run},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Flip once replication lands: every scenario but the loss of a whole
/// replica set then asserts [`issue_13_promise`].
const REPLICATION: bool = false;

async fn scenario(name: &str, fault: Fault) -> Outcome {
    scenario_of(Scenario::new(name, fault)).await
}

async fn scenario_of(s: Scenario) -> Outcome {
    let o = run(Path::new(BIN), &s).await.unwrap();
    println!("{TABLE_HEADER}\n{}", o.row());
    println!(
        "moments: {:?}",
        o.moments
            .iter()
            .map(|m| (&m.what, m.channels.len()))
            .collect::<Vec<_>>()
    );
    assert!(o.closed.is_empty(), "subscribers cut off: {:?}", o.closed);
    if std::env::var_os("SCENARIO_TRACE").is_some() {
        for (ch, c) in &o.report.channels {
            if !c.seamless() {
                println!("{ch}: {c:?}\n{}", o.trace(ch));
            }
        }
        for (name, log) in &o.logs {
            println!("==== {name}\n{log}");
        }
    }
    assert!(
        o.moments.iter().any(|m| !m.channels.is_empty()),
        "the fault moved no channel"
    );
    o
}

/// Issue 13, for every fault a replica survives: nothing lost, repeated,
/// reordered or skipped, no epoch change announced, clients that were away
/// recover, and publishing resumes on every moved channel.
fn issue_13_promise(o: &Outcome) {
    let t = &o.report.total;
    assert!(t.seamless(), "{:#?}", o.report);
    assert_eq!(
        o.abandoned, 0,
        "publications given up: {:?}",
        o.publish_errors
    );
    assert_eq!(o.never_resumed(), 0, "{:?}", o.failover);
}

/// What docs/operations.md promises under every fault: a loss of
/// continuity is announced (`resubscribed`, `recovered: false`), never
/// silent; nothing acknowledged goes missing unannounced, nothing is
/// repeated or reordered, no ended epoch comes back. Issue 13 keeps this
/// for the loss of a whole replica set.
fn nothing_silent(o: &Outcome) {
    assert!(o.report.total.nothing_silent(), "{:#?}", o.report);
    assert_eq!(o.never_resumed(), 0, "{:?}", o.failover);
}

/// Nothing acknowledged goes missing unannounced, nothing is reordered,
/// and publishing resumes on every moved channel.
fn no_silent_loss(o: &Outcome) {
    let t = &o.report.total;
    assert_eq!((t.missing, t.reorders), (0, 0), "{:#?}", o.report);
    assert_eq!(o.never_resumed(), 0, "{:?}", o.failover);
}

/// Today, for an owner that dies or is cut off (one move, then none, or a
/// move back 10 s later): [`no_silent_loss`], no
/// offset jump or epoch change unannounced, no ended epoch back. Not
/// [`nothing_silent`] yet: a client that comes back with `since` during
/// the failover may get publications twice (a reset to the epoch it is in,
/// at a lower offset: `rewinds`, `duplicates`, as issue 13 reports; seen
/// in 4 of 10 runs of `kill_of_an_owner` and of `both_replicas_killed`),
/// and a retry may be published twice (idempotency keys are not handed
/// over).
fn todays_failover(o: &Outcome) {
    no_silent_loss(o);
    let t = &o.report.total;
    assert_eq!(
        (t.silent_gaps, t.resets_to_ended_epoch),
        (0, 0),
        "{:#?}",
        o.report
    );
}

/// Today, for a frozen owner: nothing reordered, publishing resumes. When
/// it thaws, its subscribers are sent back to its ended epoch and its
/// history is replayed, then to the current epoch and replayed again
/// (duplicates, resets to an ended epoch, and deliveries of the current
/// epoch while reset to the ended one: silent gaps), as issue 13 reports;
/// and, under load, a gateway lost a channel silently after the move and
/// the move back (18 missing, once), as in [`todays_double_failover`].
fn todays_freeze(o: &Outcome) {
    assert_eq!(o.report.total.reorders, 0, "{:#?}", o.report);
    assert_eq!(o.never_resumed(), 0, "{:?}", o.failover);
}

/// Today, when a channel moves twice in quick succession (both replicas
/// killed: to the second, then the third broker; a kill and restart: away
/// and back): everything [`todays_failover`] asks but `missing`. A gateway
/// may silently stop delivering such a channel: it re-places only the
/// channels of one ring change (5 of 7 in a run that showed it), still
/// believes it is subscribed to the others, and sends no `resubscribed`.
/// Seen in 1 of 10 runs of `both_replicas_killed` (39 acknowledged
/// publications missing) on an idle machine; under load (load average 10
/// on 2 cores) in `both_replicas_killed` (58) and
/// `kill_and_restart_of_an_owner` (22). A bug the scenarios found.
fn todays_double_failover(o: &Outcome) {
    let t = &o.report.total;
    let held = (t.reorders, t.silent_gaps, t.resets_to_ended_epoch);
    assert_eq!(held, (0, 0, 0), "{:#?}", o.report);
    assert_eq!(o.never_resumed(), 0, "{:?}", o.failover);
}

/// Today, for a hand-over (a broker joins, drains, restarts): everything
/// issue 13 asks but `missing` and `duplicates`.
///
/// Missing: a gateway may silently stop delivering a moved channel; the
/// logs suggest it placed its subscription at the new owner before the
/// new owner pulled the channel from the old one, and the pulled state
/// does not carry that subscription (no `resubscribed`; `since` still
/// recovers the history). Seen in 6 of 9 runs of `rolling_restart` (60 to
/// 242 acknowledged publications missing) and 1 of 10 of
/// `broker_joins_and_another_drains` (56). A bug the scenarios found
/// (docs/replication.md, baseline).
///
/// Duplicates: idempotency keys are not handed over (docs/operations.md,
/// Handoff), so a publish that timed out at the old owner and was retried
/// at the new one is published twice (7 in one run after the merge of
/// main, whose rolling restart also stalled a channel for 7.8 s).
fn todays_handoff(o: &Outcome) {
    let t = &o.report.total;
    let mut promised = t.clone();
    promised.missing = 0;
    promised.duplicates = 0;
    assert!(promised.seamless(), "{:#?}", o.report);
    assert_eq!(o.never_resumed(), 0, "{:?}", o.failover);
}

fn promise(o: &Outcome, today: fn(&Outcome)) {
    if REPLICATION {
        issue_13_promise(o)
    } else {
        today(o)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_of_an_owner() {
    let o = scenario("kill", Fault::Kill).await;
    promise(&o, todays_failover);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_of_an_owner() {
    let o = scenario(
        "restart",
        Fault::KillRestart {
            down: Duration::from_secs(1),
        },
    )
    .await;
    promise(&o, todays_double_failover);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_owner() {
    let o = scenario(
        "freeze",
        Fault::Freeze {
            frozen: Duration::from_secs(8),
        },
    )
    .await;
    promise(&o, todays_freeze);
}

/// The last broker runs in a network namespace (testkit::partition),
/// whose link drops every packet for 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_broker() {
    let o = scenario(
        "partition",
        Fault::Partition {
            cut: Duration::from_secs(10),
        },
    )
    .await;
    promise(&o, todays_failover);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart() {
    let o = scenario("rolling", Fault::RollingRestart).await;
    promise(&o, todays_handoff);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_joins_and_another_drains() {
    let o = scenario("joindrain", Fault::JoinAndDrain).await;
    promise(&o, todays_handoff);
}

/// The one fault replication cannot cover: the first two brokers of a
/// channel's failover order (its replica set with R = 2) killed at once.
/// An announced epoch change, today and after issue 13.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_killed() {
    let o = scenario("replicas", Fault::KillReplicas { replicas: 2 }).await;
    if REPLICATION {
        nothing_silent(&o)
    } else {
        todays_double_failover(&o)
    }
}
