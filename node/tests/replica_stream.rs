//! A leader's appends over its `Replicate` streams to real replication
//! services (docs/replication.md): pipelined, committed only once every
//! follower stored them (the witness stores none), held while a follower
//! is away and resent when it is back, and refused once a later term was
//! chosen, which ends the old leader's leadership.

mod voters;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use switchboard_cluster::ownership::Release;
use switchboard_cluster::replication::{ReplicaConfig, Term};
use switchboard_core::{
    Broker, BrokerName, GatewayId, Namespaces, Position, PublishRequest, SubscribeRequest,
};
use switchboard_node::{
    BrokerConfig, LocalBroker,
    local_broker::Holding,
    replica::{
        Entry, Epoch, ReplicaError, Replicas,
        election::{Elected, stand},
        peer_stream::PeerStreams,
        takeover::HandedTo,
    },
};
use tokio::time::timeout;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use voters::{NAMES, addrs, cluster, news, plan, serve_on, shared_dialer};

const WAIT: Duration = Duration::from_secs(10);

fn entry(i: u64) -> Entry {
    Entry {
        frame: Bytes::from(format!("{{\"n\":{i}}}")),
        idempotency_key: Some(format!("k{i}")),
        published_micros: i,
    }
}

fn b(name: &str) -> BrokerName {
    name.into()
}

async fn elect(
    replicas: &Replicas,
    dial: &voters::Dial,
    order: &[&str],
    down: &[&str],
) -> ReplicaConfig {
    let candidacy = replicas.candidacy(&news(), plan(order, down)).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    match stand(replicas, &**dial, &news(), candidacy, deadline)
        .await
        .unwrap()
    {
        Elected::Leads { config, .. } => config,
        other => panic!("expected to lead, got {other:?}"),
    }
}

/// `leader` elected over every voter and leading epoch `e1`, with its
/// streams to the others.
async fn lead_all(leader: &Arc<Replicas>, dial: &voters::Dial) -> (Arc<PeerStreams>, Epoch) {
    let config = elect(leader, dial, &NAMES, &[]).await;
    let streams = PeerStreams::new(
        leader.clone(),
        dial.clone(),
        TaskTracker::new(),
        CancellationToken::new(),
    );
    let epoch = Epoch {
        id: "e1".into(),
        created_micros: 1,
    };
    streams.send(leader.lead(&news(), &config, epoch.clone()).unwrap());
    (streams, epoch)
}

/// Appends `n` at the leader and sends them; returns each offset's wait.
fn publish(
    leader: &Replicas,
    streams: &Arc<PeerStreams>,
    n: std::ops::RangeInclusive<u64>,
) -> Vec<(u64, tokio::sync::watch::Receiver<u64>)> {
    n.map(|i| {
        let appended = leader.append_led(&news(), entry(i)).unwrap();
        assert_eq!(appended.offset, i);
        streams.send(appended.outgoing);
        (appended.offset, appended.committed)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_commit_once_every_follower_stored_them_and_wait_for_one_that_is_away() {
    let voters = cluster("stream").await;
    let addrs = addrs(&voters);
    let dial = shared_dialer(addrs.clone());
    let b1 = voters[&b("b1")].replicas.clone();
    let (streams, epoch) = lead_all(&b1, &dial).await;

    for (offset, mut committed) in publish(&b1, &streams, 1..=200) {
        timeout(WAIT, committed.wait_for(|c| *c >= offset))
            .await
            .unwrap()
            .unwrap();
    }
    let (term, end, _, held_epoch) = voters[&b("b2")].replicas.state(&news()).unwrap();
    assert_eq!((term, end, held_epoch), (Term(1), 200, Some(epoch)));
    // The witness votes but stores nothing.
    let witness = voters[&b("b3")].replicas.state(&news()).unwrap();
    assert_eq!(witness.1, 0);

    // The follower's server stops: nothing commits without it.
    voters[&b("b2")].stop.cancel();
    let mut waiting = publish(&b1, &streams, 201..=201);
    let (offset, mut committed) = waiting.remove(0);
    let early = timeout(
        Duration::from_millis(500),
        committed.wait_for(|c| *c >= offset),
    )
    .await
    .is_ok();
    assert!(!early, "committed while the follower could not store it");

    // It comes back on another port with what it held: the stream opens
    // again, what it missed is resent, and the publication commits.
    let (addr, _stop) = serve_on(voters[&b("b2")].replicas.clone()).await;
    addrs.lock().insert(b("b2"), addr);
    let resent = timeout(WAIT, async {
        loop {
            streams.send(b1.renewals());
            if tokio::time::timeout(
                Duration::from_millis(100),
                committed.wait_for(|c| *c >= offset),
            )
            .await
            .is_ok()
            {
                break;
            }
        }
    })
    .await;
    assert!(
        resent.is_ok(),
        "never committed after the follower came back"
    );
    assert_eq!(voters[&b("b2")].replicas.state(&news()).unwrap().1, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_leaders_appends_are_refused_and_it_steps_down() {
    let voters = cluster("stale").await;
    let dial = shared_dialer(addrs(&voters));
    let b1 = voters[&b("b1")].replicas.clone();
    let b2 = voters[&b("b2")].replicas.clone();
    let config = elect(&b1, &dial, &NAMES, &[]).await;
    let streams = PeerStreams::new(
        b1.clone(),
        dial.clone(),
        TaskTracker::new(),
        CancellationToken::new(),
    );
    streams.send(
        b1.lead(
            &news(),
            &config,
            Epoch {
                id: "e1".into(),
                created_micros: 1,
            },
        )
        .unwrap(),
    );
    for (offset, mut committed) in publish(&b1, &streams, 1..=3) {
        timeout(WAIT, committed.wait_for(|c| *c >= offset))
            .await
            .unwrap()
            .unwrap();
    }

    // b2, which holds every committed publication, wins term 2 believing
    // b1 gone (b1 never renewed a lease, so nothing holds b2 off).
    let second = elect(&b2, &dial, &["b2", "b3", "b1"], &["b1"]).await;
    assert_eq!(second.term, Term(2));
    assert_eq!(
        b2.state(&news()).unwrap().1,
        3,
        "the new leader holds every commit"
    );

    // b1, still up, appends in term 1: never committed. Either b1 already
    // learnt of the later term (the witness may answer its configuration
    // after promising b2, and b1 then stops leading) and refuses the
    // append, or b2 refuses it and b1 stops leading then.
    if let Ok(appended) = b1.append_led(&news(), entry(4)) {
        streams.send(appended.outgoing);
        let mut committed = appended.committed;
        let refused = timeout(WAIT, committed.wait_for(|c| *c >= 4))
            .await
            .unwrap()
            .is_err();
        assert!(refused, "an old leader's publication was committed");
    }
    assert_eq!(b1.leads(&news()), None);

    // b2 serves the channel from its log: same epoch, same offsets, and
    // the keys of what it holds.
    let takeover = b2.takeover(&news(), 10).unwrap();
    assert_eq!(takeover.epoch, "e1");
    assert_eq!(takeover.offset, 3);
    let held: Vec<u64> = takeover.history.iter().map(|e| e.offset).collect();
    assert_eq!(held, [1, 2, 3]);
    let broker = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
    assert!(broker.adopt(takeover).unwrap());
    broker
        .attach(GatewayId::from("g1"), Arc::new(Discard))
        .await
        .unwrap();
    let since = Position {
        offset: 1,
        epoch: "e1".into(),
    };
    let reply = broker
        .subscribe(SubscribeRequest {
            gateway: GatewayId::from("g1"),
            channel: news(),
            client: None,
            since: Some(since),
        })
        .await
        .unwrap();
    assert_eq!(
        reply.recovered,
        Some(true),
        "a client inside the window recovers"
    );
    let recovered: Vec<u64> = reply.publications.iter().map(|p| p.offset).collect();
    assert_eq!(recovered, [2, 3]);
    // A retry of the second publication is answered with its position.
    let retry = broker
        .publish(PublishRequest {
            channel: news(),
            data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            from: "u".into(),
            idempotency_key: Some("k2".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        retry,
        Position {
            offset: 2,
            epoch: "e1".into()
        }
    );
}

struct Discard;

impl switchboard_core::DeliverySink for Discard {
    fn deliver(&self, _: switchboard_core::Delivery) {}
}

fn e1() -> Epoch {
    Epoch {
        id: "e1".into(),
        created_micros: 1,
    }
}

/// `leader` leading the channel in `config`, epoch `e1`, on a runtime of
/// its own, once publications `1..=n` are committed and a lease renewal
/// is sent: shutting the runtime down drops its tasks and closes its
/// sockets at once, as a killed process's.
async fn lead_on_own_runtime(
    leader: &Arc<Replicas>,
    dial: &voters::Dial,
    config: ReplicaConfig,
    n: u64,
) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (b1, dial) = (leader.clone(), dial.clone());
    runtime.spawn(async move {
        let streams = PeerStreams::new(
            b1.clone(),
            dial,
            TaskTracker::new(),
            CancellationToken::new(),
        );
        streams.send(b1.lead(&news(), &config, e1()).unwrap());
        for (offset, mut committed) in publish(&b1, &streams, 1..=n) {
            timeout(WAIT, committed.wait_for(|c| *c >= offset))
                .await
                .unwrap()
                .unwrap();
        }
        streams.send(b1.renewals());
        let _ = tx.send(());
        // Kept alive (with its streams) until the runtime goes.
        std::future::pending::<()>().await;
    });
    timeout(WAIT, rx).await.unwrap().unwrap();
    runtime
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stands_once_the_leaders_connections_drop_and_its_lease_ran_out() {
    let voters = cluster("vigil").await;
    let dial = shared_dialer(addrs(&voters));
    let b1 = voters[&b("b1")].replicas.clone();
    let b2 = voters[&b("b2")].replicas.clone();
    let config = elect(&b1, &dial, &NAMES, &[]).await;
    let renewed = std::time::Instant::now();
    let leader = lead_on_own_runtime(&b1, &dial, config, 2).await;
    // b2 grants the lease after `renewed`, so it runs at least this long.
    timeout(WAIT, async {
        while b2.lease_until(&news()).is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("b2 granted the lease");
    assert!(b2.lost_leader(&news()).is_none(), "the leader is alive");

    leader.shutdown_background();
    let due = timeout(WAIT, async {
        loop {
            if b2.lost_leader(&news()).is_some() {
                return renewed.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the follower never found the leader lost");
    // Not before the lease it granted ran out, and well before silence
    // alone would have said so.
    assert!(
        due >= switchboard_node::replica::LEASE - Duration::from_millis(100),
        "due after {due:?}, inside the lease"
    );
    assert!(
        due < switchboard_node::replica::SILENCE,
        "due after {due:?}: by silence, not the dropped connection"
    );
}

/// b1 leads the channel with b2 following, and three publications are
/// committed; returns b1's streams (kept for the test) and the epoch.
async fn three_committed(
    voters: &std::collections::HashMap<BrokerName, voters::Voter>,
    dial: &voters::Dial,
) -> (Arc<PeerStreams>, Epoch) {
    let b1 = voters[&b("b1")].replicas.clone();
    let (streams, epoch) = lead_all(&b1, dial).await;
    for (offset, mut committed) in publish(&b1, &streams, 1..=3) {
        timeout(WAIT, committed.wait_for(|c| *c >= offset))
            .await
            .unwrap()
            .unwrap();
    }
    (streams, epoch)
}

/// Returns once `voter` holds no running lease for the channel: its leader
/// renewed once as it won, and nothing renews it here, as if it had died
/// (and comes back having lost its copy).
async fn lease_ran_out(voter: &Replicas) {
    if let Some(until) = voter.lease_until(&news()) {
        tokio::time::sleep_until(until.into()).await;
    }
}

/// A follower hands its replica to the leader of its term when that
/// leader lost its own copy (it restarted before anyone took its place),
/// and stops counting as complete: the leader goes on unreplicated, so
/// this log falls behind and must never stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_hands_its_replica_to_a_leader_that_lost_its_copy() {
    let voters = cluster("handback").await;
    let dial = shared_dialer(addrs(&voters));
    let (_streams, epoch) = three_committed(&voters, &dial).await;
    let b2 = voters[&b("b2")].replicas.clone();
    // Only to the leader of the term it follows, while that one is not
    // lost here.
    assert!(b2.hand_replica(&news(), &b("b3"), 10).is_none());
    // The witness names that leader to an owner that asks it.
    let b3 = voters[&b("b3")].replicas.clone();
    assert_eq!(b3.holder_for(&news(), &b("b4")), Some(b("b1")));
    lease_ran_out(&b2).await;
    let (handed, to) = b2.hand_replica(&news(), &b("b1"), 10).expect("handed");
    assert_eq!(to, HandedTo::Leader);
    let s = &handed;
    assert_eq!(
        (s.epoch.as_str(), s.offset, s.history.len()),
        (epoch.id.as_str(), 3, 3)
    );
    let keys: Vec<(String, u64)> = (1..=3).map(|i| (format!("k{i}"), i)).collect();
    assert_eq!(s.keys, keys, "the keys go with it");
    assert!(!b2.holds_epoch(&news()));
    let standing = b2.candidacy(&news(), plan(&["b2", "b3", "b1"], &["b1"]));
    assert!(
        matches!(standing, Err(ReplicaError::Ineligible(_))),
        "{standing:?}"
    );
    assert!(
        b2.hand_replica(&news(), &b("b1"), 10).is_none(),
        "handed once"
    );
}

/// A follower standing for the channel itself keeps its replica while
/// that candidacy is being decided: its log may yet lead the term. Handed
/// away meanwhile, the term could be won by a broker with no log, the
/// handed copy lose its election to that term and be forgotten: every
/// copy gone, and the channel started anew (tests/lost_majority.rs, once
/// in CI). Once the candidacy ended having won nothing, the leader that
/// lost its copy gets the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_its_replica_while_it_stands_for_the_channel() {
    let voters = cluster("standing").await;
    let addrs = addrs(&voters);
    let dial = shared_dialer(addrs.clone());
    let _streams = three_committed(&voters, &dial).await;
    // b1 restarts (its server gone, its copy lost) and b3 never answers:
    // b2's candidacy runs until its deadline, winning nothing.
    voters[&b("b1")].stop.cancel();
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    addrs.lock().insert(b("b3"), frozen.local_addr().unwrap());
    let b2 = voters[&b("b2")].replicas.clone();
    let candidacy = b2
        .candidacy(&news(), plan(&["b2", "b3", "b1"], &["b1"]))
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    let standing = tokio::spawn({
        let (b2, dial) = (b2.clone(), dial.clone());
        async move { stand(&b2, &*dial, &news(), candidacy, until).await }
    });
    timeout(WAIT, async {
        while !b2.is_standing(&news()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("b2 stands");
    // Asked while it stands: withheld (asked again, it hands it below).
    assert!(b2.hand_replica(&news(), &b("b1"), 10).is_none());
    assert!(b2.holds_epoch(&news()), "the replica is kept");
    let outcome = standing.await.unwrap().unwrap();
    assert_eq!(outcome, Elected::TimedOut);
    assert!(!b2.is_standing(&news()));
    let (handed, _) = b2.hand_replica(&news(), &b("b1"), 10).expect("handed");
    assert_eq!((handed.offset, handed.history.len()), (3, 3));
}

/// A leader that asks for a channel while it holds a copy (to check it:
/// it was counted out, or saw this broker come back) is never handed the
/// follower's replica; only one that lost its copy is. Handed anyway, the
/// follower voided its log under a live leader whose lease had not reached
/// it yet, and the leader's death next lost the channel's history
/// (tests/replication.rs: acknowledged at offset 1 where 6 was due).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_holding_a_copy_is_not_handed_the_replica() {
    let voters = cluster("holds").await;
    let dial = shared_dialer(addrs(&voters));
    let (_streams, epoch) = three_committed(&voters, &dial).await;
    let b2 = voters[&b("b2")].replicas.clone();
    let stop = CancellationToken::new();
    let broker = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
    let broker = voters::replicating(broker, &b2, &dial, &stop);
    // Asked twice by a leader that holds its copy: a fence, no replica.
    for _ in 0..2 {
        let kept = broker.release_for(&news(), "b1", true).unwrap();
        assert_eq!(kept, Release::NotHeld);
        assert!(b2.holds_epoch(&news()), "the replica is kept");
    }
    // Asked by the same leader without its copy, once it stopped renewing
    // its lease: handed.
    lease_ran_out(&b2).await;
    let Release::State(handed) = broker.release_for(&news(), "b1", false).unwrap() else {
        panic!("the replica was not handed");
    };
    assert_eq!(
        (handed.epoch.as_str(), handed.offset),
        (epoch.id.as_str(), 3)
    );
    assert!(!b2.holds_epoch(&news()));
    stop.cancel();
}

/// b1 leads the channel with b2 following (b3 the witness) on a runtime
/// of its own, gets three publications committed and its lease granted,
/// then dies as a killed process does (its runtime shut down, its sockets
/// closed at once); returns once b2 and b3 find it lost.
async fn three_committed_then_killed(
    voters: &std::collections::HashMap<BrokerName, voters::Voter>,
    dial: &voters::Dial,
) -> Epoch {
    let b1 = voters[&b("b1")].replicas.clone();
    let config = elect(&b1, dial, &NAMES, &[]).await;
    let leader = lead_on_own_runtime(&b1, dial, config, 3).await;
    let voter = |n: &str| voters[&b(n)].replicas.clone();
    timeout(WAIT, async {
        while voter("b2").lease_until(&news()).is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("b2 granted the lease");
    leader.shutdown_background();
    voters[&b("b1")].stop.cancel();
    timeout(WAIT, async {
        while !(voter("b2").leader_lost(&b("b1")) && voter("b3").leader_lost(&b("b1"))) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("b2 and b3 never found the leader lost");
    e1()
}

/// Once its leader is lost here, a follower hands its replica, with the
/// term's configuration, to the broker that asks for the channel as its
/// owner now (one that joined, say, and holds nothing of it), which
/// stands on that term with it and leads the channel in the same epoch;
/// and the witness names the follower to such an owner that asked it
/// first. Before session 17 both answered "not held", and the owner
/// started the channel anew after refusing it for 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_hands_its_replica_to_the_owner_once_its_leader_is_lost() {
    let voters = cluster("owner").await;
    let addrs = addrs(&voters);
    let dial = shared_dialer(addrs.clone());
    let b2 = voters[&b("b2")].replicas.clone();
    let b3 = voters[&b("b3")].replicas.clone();
    let b4 = voters::voter("b4", "owner").await;
    addrs.lock().insert(b("b4"), b4.addr);
    let epoch = three_committed_then_killed(&voters, &dial).await;
    assert_eq!(b3.holder_for(&news(), &b("b4")), Some(b("b2")));
    assert_eq!(b3.holder_for(&news(), &b("b2")), None, "never the asker");
    let (handed, to) = b2.hand_replica(&news(), &b("b4"), 10).expect("handed");
    assert_eq!(to, HandedTo::Owner);
    assert_eq!(
        (handed.epoch.as_str(), handed.offset),
        (epoch.id.as_str(), 3)
    );
    let config = handed
        .handed
        .clone()
        .expect("with the term's configuration");
    assert_eq!((config.term, config.leader.clone()), (Term(1), b("b1")));
    assert!(!b2.holds_epoch(&news()), "the follower's log is void");
    // Having promised b4 the next term, durably, b2 can no longer be
    // adopted into b1's: were b1 alive after all, it could commit nothing
    // more that the copy lacks.
    let (promised, to, _) = b2.register(&news()).unwrap();
    assert_eq!((promised, to), (Term(2), Some(b("b4"))));
    assert!(
        !b2.adopt(&news(), &config, 3, epoch.clone()).unwrap(),
        "adopted again"
    );

    // The owner keeps the copy as its log and wins the next term on it,
    // over b2 and b3, leading in the same epoch at the same offsets.
    let b4r = b4.replicas.clone();
    assert!(b4r.seed(&handed, &config, 10));
    let won = elect(&b4r, &dial, &["b4", "b2", "b3"], &["b1"]).await;
    assert_eq!(won.leader, b("b4"));
    assert!(won.term > Term(1));
    let (_, end, _, log_epoch) = b4r.state(&news()).unwrap();
    assert_eq!((end, log_epoch.map(|e| e.id)), (3, Some(epoch.id)));
}

/// A `LocalBroker` over b1's replicas, leading the channel (epoch id
/// returned) in the first term of `voters`; stop the token when done.
async fn led_by_a_broker(
    voters: &std::collections::HashMap<BrokerName, voters::Voter>,
) -> (LocalBroker, String, CancellationToken) {
    let dial = shared_dialer(addrs(voters));
    let b1 = voters[&b("b1")].replicas.clone();
    let stop = CancellationToken::new();
    let broker = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
    let broker = voters::replicating(broker, &b1, &dial, &stop);
    broker.touch(&news()).unwrap();
    let (id, created_micros) = broker.epoch_of(&news()).unwrap();
    let config = elect(&b1, &dial, &NAMES, &[]).await;
    let epoch = Epoch {
        id: id.clone(),
        created_micros,
    };
    let r = broker.replicated().unwrap();
    broker.lead_won(r, &news(), &config, epoch).unwrap();
    (broker, id, stop)
}

fn an_hour_on() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}

/// A channel led here as replicated is not swept as idle while its log
/// holds publications not yet stored in its state: it is idle from its
/// creation until its first publication is committed and stored. Swept in
/// that window (by the sweep every second), the commit found no state to
/// store into, and the next publication made a new state in a new epoch
/// that no replica held (tests/hand_back.rs, 3 runs of 42). Swept with
/// nothing pending, it comes back in its log's epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_led_channel_is_swept_only_with_nothing_pending_and_comes_back_in_its_epoch() {
    let voters = cluster("sweep").await;
    let (broker, id, stop) = led_by_a_broker(&voters).await;
    // Nothing pending: swept, and back in the same epoch when touched.
    broker.sweep(an_hour_on());
    assert_eq!(broker.holding(&news()), Holding::Nothing);
    broker.touch(&news()).unwrap();
    assert_eq!(broker.epoch_of(&news()).map(|e| e.0), Some(id.clone()));
    // A publication appended, not yet committed: kept.
    let b1 = &voters[&b("b1")].replicas;
    b1.append_led(&news(), entry(1)).unwrap();
    broker.sweep(an_hour_on());
    assert_eq!(broker.holding(&news()), Holding::State, "swept");
    assert_eq!(broker.epoch_of(&news()).map(|e| e.0), Some(id));
    stop.cancel();
}

/// A channel led here and swept while idle is still handed over as led
/// (its epoch, and its term's configuration for the new owner to stand
/// on), not answered "not held": its new owner then started it in a new
/// epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swept_led_channel_is_handed_over_with_its_term() {
    let voters = cluster("swept-release").await;
    let (broker, id, stop) = led_by_a_broker(&voters).await;
    broker.sweep(an_hour_on());
    assert_eq!(broker.holding(&news()), Holding::Nothing);
    let Release::State(handed) = broker.release_for(&news(), "b4", false).unwrap() else {
        panic!("not handed over");
    };
    assert_eq!(handed.epoch, id);
    assert_eq!(handed.handed.map(|c| c.leader), Some(b("b1")));
    assert!(matches!(broker.holding(&news()), Holding::Fenced(to) if to == "b4"));
    assert!(
        voters[&b("b1")].replicas.leads(&news()).is_none(),
        "still leads"
    );
    stop.cancel();
}

/// A lease grant counts from the heartbeat it answers, not from the
/// leader's latest: replies lag behind sends under load, and a grant for
/// an old heartbeat counted from a new one let a leader serve reads after
/// its voters' leases ran out (the model always echoed the send time; the
/// brokers did not until session 21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_lease_grant_counts_from_the_heartbeat_it_answers() {
    use switchboard_proto::replica::v1::{
        ReplicateReply, replicate_reply::Kind, replicate_request::Kind as Sent,
    };
    let voters = cluster("late-grant").await;
    let (broker, _, stop) = led_by_a_broker(&voters).await;
    let r = broker.replicated().unwrap();
    let sent_micros = |out: Vec<switchboard_node::replica::leading::Outgoing>| match out
        .into_iter()
        .next()
        .map(|o| o.request.kind)
    {
        Some(Some(Sent::Heartbeat(h))) => h.sent_micros,
        other => panic!("not a heartbeat: {other:?}"),
    };
    // Nothing renews here: the renewal sent as the leader won is answered
    // and runs out, then the only grants are the ones given here, and an
    // old heartbeat is answered after a new one left.
    let old = sent_micros(r.replicas.renewals());
    tokio::time::sleep(switchboard_node::replica::LEASE).await;
    assert!(!r.replicas.leads_with_majority(&news()), "election's lease");
    let new = sent_micros(r.replicas.renewals());
    assert!(old > 0 && new > old);
    let grant = |from: &str, echoed: u64| {
        let reply = ReplicateReply {
            channel: news().to_string(),
            term: 1,
            kind: Some(Kind::LeaseMs(600)),
            heartbeat_sent_micros: echoed,
        };
        r.replicas.on_reply(&b(from), reply).unwrap();
    };
    grant("b2", old);
    grant("b3", old);
    assert!(
        !r.replicas.leads_with_majority(&news()),
        "a grant for a heartbeat sent a lease ago counted as fresh"
    );
    // The answer to the new one holds it.
    grant("b2", new);
    assert!(r.replicas.leads_with_majority(&news()));
    stop.cancel();
}

/// A leader answers reads of a channel it leads only while a majority of
/// its voters hold a lease for it (docs/replication.md, step 4; the
/// model's invariant 5). Until session 22 the brokers never checked: a
/// leader frozen past its lease, or cut off from its voters, answered
/// history, recovery and subscribe reads from a copy a later term may
/// have moved past. Here nothing renews the election's leases: once they
/// run out, a history read and a subscribe wait a lease and are refused
/// `Unavailable` (the gateway asks again); a grant that comes while a read
/// waits lets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_serves_reads_only_under_a_majority_lease() {
    use switchboard_core::{BrokerError, HistoryRequest};
    use switchboard_proto::replica::v1::{
        ReplicateReply, replicate_reply::Kind, replicate_request::Kind as Sent,
    };
    let voters = cluster("read-lease").await;
    let (broker, _, stop) = led_by_a_broker(&voters).await;
    broker
        .attach(GatewayId::from("g1"), Arc::new(Discard))
        .await
        .unwrap();
    let r = broker.replicated().unwrap().clone();
    let history = |broker: LocalBroker| async move {
        let req = HistoryRequest {
            channel: news(),
            since: None,
            limit: 10,
            reverse: false,
        };
        broker.history(req).await
    };
    let subscribe = SubscribeRequest {
        gateway: GatewayId::from("g1"),
        channel: news(),
        since: None,
        client: None,
    };
    // Under the election's leases: served at once.
    history(broker.clone()).await.unwrap();
    broker.subscribe(subscribe.clone()).await.unwrap();
    tokio::time::sleep(switchboard_node::replica::LEASE).await;
    assert!(!r.replicas.leads_with_majority(&news()), "election's lease");
    let refused = history(broker.clone()).await;
    assert!(
        matches!(refused, Err(BrokerError::Unavailable(_))),
        "a history read without a majority lease: {refused:?}"
    );
    let refused = broker.subscribe(subscribe).await;
    assert!(
        matches!(refused, Err(BrokerError::Unavailable(_))),
        "a subscribe without a majority lease: {refused:?}"
    );
    // A read waiting when a voter answers a renewal is let through.
    let sent = match r
        .replicas
        .renewals()
        .into_iter()
        .next()
        .map(|o| o.request.kind)
    {
        Some(Some(Sent::Heartbeat(h))) => h.sent_micros,
        other => panic!("not a heartbeat: {other:?}"),
    };
    let read = tokio::spawn(history(broker.clone()));
    timeout(WAIT, async {
        while r.replicas.reads_waiting() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the read never waited");
    let reply = ReplicateReply {
        channel: news().to_string(),
        term: 1,
        kind: Some(Kind::LeaseMs(600)),
        heartbeat_sent_micros: sent,
    };
    r.replicas.on_reply(&b("b2"), reply).unwrap();
    read.await.unwrap().expect("read after the grant");
    assert!(r.replicas.leads_with_majority(&news()));
    stop.cancel();
}
