//! Retiring an idle replicated channel (docs/replication.md "Retiring an
//! idle channel"), over real replication services: once a channel led
//! here has no state (swept: no subscribers, nothing pending) and every
//! publication is past its history TTL, every voter forgets its register
//! and log of it, and then the leader does; so channels that come and go
//! leave nothing behind. A voter that took part in a later term keeps it,
//! and one that forgot never votes again in a term it forgot, nor takes
//! an old leader's appends.

mod voters;

use std::{collections::HashMap, time::Duration};

use switchboard_cluster::replication::AppendReply;
use switchboard_cluster::replication::{PrepareReply, ReplicaConfig, Term};
use switchboard_core::{Broker, BrokerName, Namespaces, Position, PublishRequest};
use switchboard_node::{
    BrokerConfig, LocalBroker,
    local_broker::Holding,
    replica::{
        Append, Entry, Epoch,
        abandoned::ABANDONED_AFTER,
        election::{Elected, stand},
        retirement::Retired,
    },
};
use tokio_util::sync::CancellationToken;
use voters::{NAMES, Voter, addrs, news, plan, shared_dialer, voter_in};

const WAIT: Duration = Duration::from_secs(10);

/// How long publications stay in history here, and their idempotency
/// keys are remembered.
const TTL: Duration = Duration::from_millis(300);

fn b(name: &str) -> BrokerName {
    name.into()
}

fn short_history() -> Namespaces {
    let mut ns = Namespaces::permissive();
    for options in ns.namespaces.values_mut() {
        options.history_ttl = TTL;
    }
    ns
}

async fn cluster(tag: &str) -> HashMap<BrokerName, Voter> {
    let mut voters = HashMap::new();
    for name in NAMES {
        voters.insert(b(name), voter_in(name, tag, short_history()).await);
    }
    voters
}

/// A `LocalBroker` over b1's replicas (no channel led yet).
fn broker_on_b1(voters: &HashMap<BrokerName, Voter>, stop: &CancellationToken) -> LocalBroker {
    let dial = shared_dialer(addrs(voters));
    let b1 = voters[&b("b1")].replicas.clone();
    let config = BrokerConfig {
        idempotency_window: TTL,
        ..BrokerConfig::default()
    };
    voters::replicating(LocalBroker::new(config, short_history()), &b1, &dial, stop)
}

/// b1 stands for the channel's next term over every voter and leads it
/// from here, in the epoch of the broker's state.
async fn lead(broker: &LocalBroker) -> ReplicaConfig {
    let r = broker.replicated().unwrap();
    broker.touch(&news()).unwrap();
    let (id, created_micros) = broker.epoch_of(&news()).unwrap();
    let candidacy = r.replicas.candidacy(&news(), plan(&NAMES, &[])).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let config = match stand(&r.replicas, &*r.dial, &news(), candidacy, deadline)
        .await
        .unwrap()
    {
        Elected::Leads { config, .. } => config,
        other => panic!("expected to lead, got {other:?}"),
    };
    let epoch = Epoch { id, created_micros };
    broker.lead_won(r, &news(), &config, epoch).unwrap();
    config
}

async fn publish(broker: &LocalBroker, n: u64) -> Position {
    broker
        .publish(PublishRequest {
            channel: news(),
            data: serde_json::value::RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
            from: "u".into(),
            idempotency_key: Some(format!("k{n}")),
        })
        .await
        .unwrap()
}

fn an_hour_on() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}

/// Retires until one channel goes (its publications must first pass the
/// history TTL and the key window, by the wall clock).
async fn retired(broker: &LocalBroker) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.retire_idle().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never retired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_channel_is_forgotten_at_every_voter_and_starts_anew_above_its_terms() {
    let voters = cluster("retire").await;
    let stop = CancellationToken::new();
    let broker = broker_on_b1(&voters, &stop);
    let first = lead(&broker).await;
    let old = publish(&broker, 1).await;
    assert_eq!(publish(&broker, 2).await.offset, 2);
    // Kept while its publications are live, and while it has state.
    assert_eq!(broker.retire_idle().await, 0);
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(broker.retire_idle().await, 0);
    for name in NAMES {
        let replicas = &voters[&b(name)].replicas;
        assert!(replicas.register(&news()).is_some(), "{name} forgot early");
    }
    broker.sweep(an_hour_on());
    assert_eq!(broker.holding(&news()), Holding::Nothing);
    retired(&broker).await;
    for name in NAMES {
        let replicas = &voters[&b(name)].replicas;
        assert!(
            replicas.register(&news()).is_none(),
            "{name} kept its register"
        );
        assert!(replicas.state(&news()).is_none(), "{name} kept its log");
        assert_eq!(replicas.held(), 0, "{name} holds replication state");
        assert!(
            replicas.floor(&news()) >= first.term,
            "{name} forgot below its floor"
        );
    }
    // Back: a new epoch (its history had expired), in a term above every
    // one it had, replicated again.
    let second = lead(&broker).await;
    assert!(second.term > first.term, "{second:?} after {first:?}");
    let again = publish(&broker, 3).await;
    assert_eq!(again.offset, 1);
    assert_ne!(again.epoch, old.epoch);
    let follower = &voters[&second.followers[0]].replicas;
    let (term, end, _, epoch) = follower.state(&news()).unwrap();
    assert_eq!((term, end), (second.term, 1));
    assert_eq!(epoch.map(|e| e.id), Some(again.epoch));
    stop.cancel();
}

fn config(term: u64, leader: &str) -> ReplicaConfig {
    ReplicaConfig {
        term: Term(term),
        leader: b(leader),
        followers: vec![b("b2")],
        witness: Some(b("b3")),
        holders: vec![],
    }
}

fn append(term: u64, offset: u64) -> Append {
    Append {
        term: Term(term),
        offset,
        entry: Entry {
            frame: bytes::Bytes::from_static(b"{}"),
            idempotency_key: None,
            published_micros: 1,
        },
        committed: 0,
        log_start: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_keeps_what_it_holds_beyond_or_took_part_in_later_and_forgets_only_for_its_leader()
{
    let voters = cluster("retire-kept").await;
    let b2 = &voters[&b("b2")].replicas;
    let epoch = Epoch {
        id: "e1".into(),
        created_micros: 1,
    };
    assert!(b2.adopt(&news(), &config(3, "b1"), 0, epoch).unwrap());
    assert!(matches!(
        b2.append(&news(), append(3, 1)).unwrap(),
        AppendReply::Stored { end: 1 }
    ));
    // A publication the leader did not count when it decided (it came in
    // meanwhile, and may be committed) is kept: forgotten here, it would
    // be on the leader alone.
    let kept = |promised, configured| Retired::Kept {
        promised: Term(promised),
        configured: Term(configured),
    };
    assert_eq!(
        b2.retire(&news(), Term(3), &b("b1"), 0).unwrap(),
        kept(3, 3)
    );
    // Only the leader of its term retires it.
    assert_eq!(
        b2.retire(&news(), Term(3), &b("b3"), 1).unwrap(),
        kept(3, 3)
    );
    // A later configuration is kept: the channel went on there.
    assert!(matches!(
        b2.prepare(&news(), &b("b3"), Term(4)).unwrap(),
        PrepareReply::Promised { .. }
    ));
    assert!(b2.commit(&news(), &config(4, "b3")).unwrap().0);
    assert_eq!(
        b2.retire(&news(), Term(3), &b("b1"), 1).unwrap(),
        kept(4, 4)
    );
    assert_eq!(
        b2.retire(&news(), Term(4), &b("b3"), 1).unwrap(),
        Retired::Forgotten
    );
    assert_eq!((b2.held(), b2.floor(&news())), (0, Term(4)));
    // Forgotten: an older leader's messages are refused, no lease is
    // granted, neither brings the channel back, and no vote in a term it
    // forgot.
    assert!(matches!(
        b2.append(&news(), append(3, 2)).unwrap(),
        AppendReply::Stale { .. }
    ));
    assert_eq!(b2.renew(&news(), &b("b1"), Term(3)).unwrap(), None);
    assert_eq!(b2.renew(&news(), &b("b3"), Term(4)).unwrap(), None);
    assert_eq!(b2.held(), 0);
    assert!(matches!(
        b2.prepare(&news(), &b("b1"), Term(4)).unwrap(),
        PrepareReply::Refused { .. }
    ));
    assert!(!b2.commit(&news(), &config(3, "b1")).unwrap().0);
    // The refused commit left a blank state (nothing a fresh one would
    // not hold): the sweep drops it.
    assert_eq!((b2.held(), b2.drop_blank(), b2.held()), (1, 1, 0));

    // A bare later promise keeps nothing: no configuration was made in it.
    // The floor keeps the promise.
    let bare = switchboard_core::ChannelName::new("news:bare").unwrap();
    assert!(b2.commit(&bare, &config(5, "b1")).unwrap().0);
    assert!(matches!(
        b2.prepare(&bare, &b("b3"), Term(6)).unwrap(),
        PrepareReply::Promised { .. }
    ));
    assert_eq!(
        b2.retire(&bare, Term(5), &b("b1"), 0).unwrap(),
        Retired::Forgotten
    );
    assert!(b2.register(&bare).is_none() && b2.state(&bare).is_none());
    assert_eq!(b2.floor(&bare), Term(6));
}

/// Voters' floors differ (each is the highest term it forgot in the
/// channel's bucket): a candidate refused with a promise and no
/// configuration stands above that promise next, instead of one term
/// higher each time. Here the channel was retired at two voters and is
/// new at the third, which stands for it; a channel of another bucket is
/// not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_below_the_voters_floors_stands_above_them_next() {
    let voters = cluster("retire-floor").await;
    let other = switchboard_core::ChannelName::new("news:other").unwrap();
    assert_ne!(
        switchboard_node::floors::bucket(&other),
        switchboard_node::floors::bucket(&news())
    );
    let epoch = Epoch {
        id: "e0".into(),
        created_micros: 1,
    };
    for name in ["b2", "b3"] {
        let replicas = &voters[&b(name)].replicas;
        assert!(replicas.commit(&news(), &config(9, "b3")).unwrap().0);
        let _ = replicas.adopt(&news(), &config(9, "b3"), 0, epoch.clone());
        replicas.retire(&news(), Term(9), &b("b3"), 0).unwrap();
        assert_eq!(replicas.floor(&news()), Term(9));
        assert_eq!(replicas.floor(&other), Term::ZERO);
    }
    let b1 = &voters[&b("b1")].replicas;
    let dial = shared_dialer(addrs(&voters));
    let attempt = || async {
        let candidacy = b1.candidacy(&news(), plan(&NAMES, &[])).unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        stand(b1, &*dial, &news(), candidacy, deadline)
            .await
            .unwrap()
    };
    assert!(
        matches!(
            attempt().await,
            Elected::Lost {
                newer_term: Term(9),
                config: None
            }
        ),
        "the voters' floors refuse term 1"
    );
    match attempt().await {
        Elected::Leads { config, .. } => assert_eq!(config.term, Term(10)),
        other => panic!("expected to lead above the floors, got {other:?}"),
    }
}

/// A voter told too late (it kept its log of a retired incarnation, say
/// because it was standing when asked) and then named a follower of the
/// channel's next incarnation drops that log: its offsets are of another
/// epoch, and kept, they would be served as the new epoch's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_adopting_another_epoch_drops_the_log_of_the_ended_one() {
    let voters = cluster("retire-epoch").await;
    let b2 = &voters[&b("b2")].replicas;
    let epoch = |id: &str| Epoch {
        id: id.into(),
        created_micros: 1,
    };
    assert!(b2.adopt(&news(), &config(3, "b1"), 0, epoch("e1")).unwrap());
    for (offset, committed) in [(1, 0), (2, 1)] {
        let reply = b2.append(
            &news(),
            Append {
                committed,
                ..append(3, offset)
            },
        );
        assert!(matches!(reply.unwrap(), AppendReply::Stored { .. }));
    }
    assert_eq!(b2.state(&news()).unwrap().2, 1, "offset 1 is committed");
    // The same epoch in a later term keeps what was committed.
    assert!(b2.adopt(&news(), &config(4, "b1"), 2, epoch("e1")).unwrap());
    let (term, end, committed, _) = b2.state(&news()).unwrap();
    assert_eq!((term, end, committed), (Term(4), 1, 1));
    // Another epoch starts over.
    assert!(b2.adopt(&news(), &config(6, "b3"), 0, epoch("e2")).unwrap());
    let (term, end, committed, now) = b2.state(&news()).unwrap();
    assert_eq!((term, end, committed), (Term(6), 0, 0));
    assert_eq!(now.map(|e| e.id), Some("e2".to_owned()));
}

/// A candidacy that got no further leaves its voters a bare promise (no
/// configuration), which no leader retires. Each voter forgets it on its
/// own once it has held the same promise for `ABANDONED_AFTER`, raising
/// its floor to it: it never promises that term again, and the
/// candidate's accept round, should it still come, is refused. A register
/// that accepted a configuration stays, and a newer promise starts the
/// wait again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_promise_held_unchanged_is_forgotten_with_its_floor_raised() {
    let voters = cluster("retire-abandoned").await;
    let b2 = &voters[&b("b2")].replicas;
    let bare = switchboard_core::ChannelName::new("news:bare").unwrap();
    let promised = |reply| matches!(reply, PrepareReply::Promised { .. });
    assert!(promised(b2.prepare(&bare, &b("b1"), Term(3)).unwrap()));
    assert!(b2.commit(&news(), &config(2, "b1")).unwrap().0);
    let t0 = std::time::Instant::now();
    assert_eq!(b2.forget_abandoned(t0).unwrap(), 0);
    assert!(promised(b2.prepare(&bare, &b("b3"), Term(4)).unwrap()));
    assert_eq!(b2.forget_abandoned(t0 + ABANDONED_AFTER).unwrap(), 0);
    assert!(b2.register(&bare).is_some(), "the newer promise waits anew");
    assert_eq!(b2.forget_abandoned(t0 + 2 * ABANDONED_AFTER).unwrap(), 1);
    assert!(b2.register(&bare).is_none());
    assert!(
        b2.register(&news()).is_some(),
        "a configured register stays"
    );
    assert_eq!(b2.floor(&bare), Term(4));
    assert!(matches!(
        b2.prepare(&bare, &b("b3"), Term(4)).unwrap(),
        PrepareReply::Refused { .. }
    ));
    assert!(!b2.commit(&bare, &config(4, "b3")).unwrap().0);
    assert_eq!((b2.drop_blank(), b2.held()), (1, 1));
}

/// A witness that refuses the leader's configuration (its floor rose past
/// the term meanwhile: it retired another channel of its bucket) holds no
/// data, and the leader and its follower are still a majority: the leader
/// leads on and commits. A follower's refusal still makes it step down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_leads_on_when_only_its_witness_refuses_the_configuration() {
    use switchboard_proto::replica::v1::{ReplicateReply, replicate_reply::Kind};
    let voters = cluster("witness-refuses").await;
    let stop = CancellationToken::new();
    let broker = broker_on_b1(&voters, &stop);
    let config = lead(&broker).await;
    assert_eq!(publish(&broker, 1).await.offset, 1);
    let r = broker.replicated().unwrap();
    let refused = |from: &BrokerName| {
        let reply = ReplicateReply {
            channel: news().to_string(),
            term: config.term.0,
            kind: Some(Kind::Adopted(false)),
            heartbeat_sent_micros: 0,
        };
        r.replicas.on_reply(from, reply).unwrap();
    };
    refused(config.witness.as_ref().unwrap());
    assert_eq!(r.replicas.leads(&news()), Some(config.term));
    assert_eq!(publish(&broker, 2).await.offset, 2);
    refused(&config.followers[0]);
    assert_eq!(r.replicas.leads(&news()), None);
    stop.cancel();
}
