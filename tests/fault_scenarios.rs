//! Issue 13's fault scenarios, under steady publishing with a checker per
//! channel (testkit::scenario): 3 brokers, 2 gateways, 12 channels at
//! 4 acknowledged publications/s each, subscribers that stay and clients
//! that come back with `since`, one fault each.
//!
//! Each fault runs twice. With `broker.replication_factor = 2` (the
//! default since session 12) it asserts [`issue_13_promise`], issue 13's
//! full promise: a killed, a killed and restarted, a frozen and a
//! partitioned owner; killing both replicas of a channel (the loss
//! replication cannot cover) asserts what the same fault does with R = 1
//! ([`r1_double_failover`]). With
//! `--replication-factor 1` (each channel on its owner alone, the fleet's
//! brokers without other arguments) each asserts the part of what
//! docs/operations.md promises for R = 1 that held in every measured run;
//! the `r1_*` functions name what they leave out, and why (bugs the
//! scenarios found, in docs/replication.md's baseline). The hand-overs
//! (rolling restart, join and drain) keep issue 13's whole promise even
//! with R = 1. Each scenario prints its row of the table in
//! docs/replication.md:
//! `cargo test --test fault_scenarios -- --nocapture --test-threads=1`.

use std::{path::Path, time::Duration};

use switchboard_testkit::{
    fault::Fault,
    scenario::{Outcome, Scenario, TABLE_HEADER, run},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

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

/// Nothing acknowledged goes missing unannounced, nothing is reordered,
/// and publishing resumes on every moved channel.
fn no_silent_loss(o: &Outcome) {
    let t = &o.report.total;
    assert_eq!((t.missing, t.reorders), (0, 0), "{:#?}", o.report);
    assert_eq!(o.never_resumed(), 0, "{:?}", o.failover);
}

/// With R = 1, for an owner that dies or is cut off (one move, then none, or a
/// move back 10 s later): [`no_silent_loss`], no
/// offset jump or epoch change unannounced, no ended epoch back. Not
/// issue 13's promise: a client that comes back with `since` during
/// the failover may get publications twice (a reset to the epoch it is in,
/// at a lower offset: `rewinds`, `duplicates`, as issue 13 reports; seen
/// in 4 of 10 runs of `kill_of_an_owner` and of `both_replicas_killed`),
/// and a retry may be published twice (idempotency keys are not handed
/// over).
fn r1_failover(o: &Outcome) {
    no_silent_loss(o);
    let t = &o.report.total;
    assert_eq!(
        (t.silent_gaps, t.resets_to_ended_epoch),
        (0, 0),
        "{:#?}",
        o.report
    );
}

/// With R = 1, for a frozen owner: nothing reordered, publishing resumes. When
/// it thaws, its subscribers may be sent back to its ended epoch and its
/// history replayed, then to the current epoch and replayed again
/// (duplicates, resets to an ended epoch, and deliveries of the current
/// epoch while reset to the ended one: silent gaps), as issue 13 reports.
fn r1_freeze(o: &Outcome) {
    assert_eq!(o.report.total.reorders, 0, "{:#?}", o.report);
    assert_eq!(o.never_resumed(), 0, "{:?}", o.failover);
}

/// With R = 1, for a broker cut off and healed: as [`r1_failover`]. At the
/// heal, the cut-off broker's gossip (it had declared every other member
/// down) can have a healthy broker declared down for a moment; the ring
/// flips, and a channel lands for some milliseconds on a broker whose view
/// lost that broker too. Until session 15 that broker served its stale
/// copy of the channel's ended epoch before it pulled the newer one (1 in
/// 3 runs: 6 resets to the ended epoch, 114 duplicates, announced; and in
/// a stop's CI run, one acknowledged publication missing), or started a
/// channel it never held anew, and that empty epoch, the newer, replaced
/// the channel's history at its holder (1 in 15 runs: 2 acknowledged
/// publications missing). It now refuses both while the broker to ask is
/// out of its view (`node/tests/unverified_copy.rs`).
fn r1_partition(o: &Outcome) {
    r1_failover(o);
}

/// With R = 1, when a channel moves twice in quick succession (both replicas
/// killed: to the second, then the third broker; a kill and restart: away
/// and back): as [`r1_failover`]. (Until the fix of a gateway's
/// placement, which stayed holding deliveries for good when one of its
/// clients' presence entries failed to be placed again, a gateway could
/// silently stop delivering such a channel: 22 to 58 acknowledged
/// publications missing in 3 of 10 runs.)
fn r1_double_failover(o: &Outcome) {
    r1_failover(o);
}

/// A hand-over (a broker joins, drains, restarts) keeps issue 13's whole
/// promise without replication: the channel's state moves with its
/// idempotency keys (docs/operations.md, Handoff). (Until the keys moved,
/// a publish that timed out at the old owner and was retried at the new
/// one was published twice: 7 duplicates in one run. Until the placement
/// fix, 6 of 9 rolling restarts and 1 of 10 joins and drains lost 56 to
/// 242 acknowledged publications silently at a gateway.)
fn handoff_promise(o: &Outcome) {
    issue_13_promise(o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_of_an_owner() {
    let o = scenario("kill", Fault::Kill).await;
    r1_failover(&o);
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
    r1_double_failover(&o);
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
    r1_freeze(&o);
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
    r1_partition(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart() {
    let o = scenario("rolling", Fault::RollingRestart).await;
    handoff_promise(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_joins_and_another_drains() {
    let o = scenario("joindrain", Fault::JoinAndDrain).await;
    handoff_promise(&o);
}

/// With R = 1: the first two brokers of a channel's failover order killed
/// at once, so a channel moves twice. (With R = 2 that is the one fault
/// replication cannot cover: `both_replicas_of_a_replicated_channel_killed`,
/// an announced epoch change.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_killed() {
    let o = scenario("replicas", Fault::KillReplicas { replicas: 2 }).await;
    r1_double_failover(&o);
}

/// Brokers with `broker.replication_factor = 2` (each has its own data
/// directory from the fleet): the config file they share.
fn replicated(_broker: &str) -> Vec<String> {
    // Written once: scenarios start their brokers side by side.
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let path = PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("sb-replicated-{}.toml", std::process::id()));
        let config = include_str!("../config/dev.toml").replacen(
            "[broker]\n",
            "[broker]\nreplication_factor = 2\n",
            1,
        );
        assert!(
            config.contains("replication_factor = 2"),
            "config/dev.toml has no [broker]"
        );
        std::fs::write(&path, config).unwrap();
        path.to_str().unwrap().to_owned()
    });
    vec!["--config".into(), path.clone()]
}

/// [`replicated`], with `broker.lost_majority = "serve"` (not the
/// default): a channel whose majority of voters is lost is served by the
/// broker left, unreplicated (docs/replication.md "A lost majority").
fn replicated_serving(broker: &str) -> Vec<String> {
    let mut args = replicated(broker);
    args.extend(["--lost-majority".to_owned(), "serve".to_owned()]);
    args
}

/// A scenario whose brokers all run with [`replicated`].
async fn replicated_scenario(name: &str, fault: Fault) -> Outcome {
    let mut s = Scenario::new(name, fault);
    s.broker_args = Some(replicated);
    scenario_of(s).await
}

/// Where replication is built (docs/replication.md, status): `kill -9` of
/// an owner with R = 2 keeps issue 13's whole promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_of_a_replicated_owner() {
    let o = replicated_scenario("rkill", Fault::Kill).await;
    issue_13_promise(&o);
}

/// With R = 2, an owner frozen (SIGSTOP) past the failure-detection time,
/// then thawed: its follower takes over in a later term, and the thawed
/// owner's copy gives way to the copy of that term (docs/replication.md,
/// "Which copy wins"); a gateway that meets the stale copy meanwhile asks
/// again instead of rewinding its clients. Issue 13's whole promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_replicated_owner() {
    let o = replicated_scenario(
        "rfreeze",
        Fault::Freeze {
            frozen: Duration::from_secs(8),
        },
    )
    .await;
    issue_13_promise(&o);
}

/// With R = 2, a broker cut off for 10 s and healed: as
/// [`frozen_replicated_owner`], and the cut-off broker's own copies (or a
/// fresh epoch it served unreplicated) never replace the replicated ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_replicated_broker() {
    let o = replicated_scenario(
        "rpartition",
        Fault::Partition {
            cut: Duration::from_secs(10),
        },
    )
    .await;
    issue_13_promise(&o);
}

/// With R = 2, an owner killed and started again before gossip noticed:
/// it comes back with its votes but no log, and its follower hands it the
/// replica with the term's configuration, so the channel goes on in the
/// same epoch, led replicated again (docs/replication.md, "Hand-back";
/// tests/hand_back.rs kills it a second time), with the idempotency keys its log
/// holds: issue 13's whole promise. (Before the keys went with it, a
/// publication committed just before the kill and retried after it was
/// published again: 8 duplicates in 1 of 6 runs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_of_a_replicated_owner() {
    let o = replicated_scenario(
        "rrestart",
        Fault::KillRestart {
            down: Duration::from_secs(1),
        },
    )
    .await;
    issue_13_promise(&o);
}

/// With R = 2 and `broker.lost_majority = "serve"`, the two replicas of a
/// channel killed together (the first two brokers of its failover order):
/// the one loss replication cannot cover. No majority of the channel's
/// voters is left, so nobody can win a term; the survivor serves what it
/// holds unreplicated: from its own complete replica where it was one
/// (same epoch, same offsets), else in a new epoch, announced, as with
/// R = 1, and asserted as the R = 1 scenario is (a client that comes back
/// with `since` during the move may get a publication twice, as
/// [`r1_failover`] says). Publishing resumes: before, every request timed
/// out on an election (code 100 for good). With the default, `refuse`,
/// the survivor refuses those channels until a replica is back
/// (tests/lost_majority.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_of_a_replicated_channel_killed() {
    let mut s = Scenario::new("rreplicas", Fault::KillReplicas { replicas: 2 });
    s.broker_args = Some(replicated_serving);
    let o = scenario_of(s).await;
    r1_double_failover(&o);
}
