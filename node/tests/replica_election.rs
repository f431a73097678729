//! Elections of a channel's leader over real gRPC between three brokers'
//! replication services (docs/replication.md): the first term stands on
//! the failover order and a majority accepts it, two candidates for one
//! term never both win, and after the leader's server is gone its follower
//! takes the next term, but only once the lease it granted has run out.

mod voters;

use std::time::{Duration, Instant};

use switchboard_cluster::replication::{ReplicaConfig, Term};
use switchboard_core::BrokerName;
use switchboard_node::replica::election::{Elected, stand};
use switchboard_proto::replica::v1::{self as pb, replica_client::ReplicaClient};
use tonic::transport::Channel;
use voters::{NAMES, cluster, dialer, news, plan};

fn leads(e: Elected) -> ReplicaConfig {
    match e {
        Elected::Leads { config, .. } => config,
        other => panic!("expected to lead, got {other:?}"),
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_term_is_decided_by_the_failover_orders_voters() {
    let voters = cluster("first").await;
    let dial = dialer(&voters);
    let b1 = &voters[&BrokerName::from("b1")].replicas;
    let candidacy = b1.candidacy(&news(), plan(&NAMES, &[])).unwrap();
    assert_eq!(candidacy.term(), Term(1));
    let config = leads(
        stand(b1, &dial, &news(), candidacy, deadline())
            .await
            .unwrap(),
    );
    assert_eq!(config.leader.as_str(), "b1");
    assert_eq!(config.followers, vec![BrokerName::from("b2")]);
    assert_eq!(config.witness, Some(BrokerName::from("b3")));
    // A majority accepted it, durably, the candidate among them: the
    // election decides on a majority's answers as they come, so the last
    // voter's calls may be dropped unanswered (docs/replication.md). No
    // voter holds anything else.
    let mut accepting = Vec::new();
    for (name, v) in &voters {
        match v.replicas.register(&news()) {
            Some((promised, to, Some(accepted))) => {
                assert_eq!((promised, to.as_ref()), (Term(1), Some(&config.leader)));
                assert_eq!(accepted, config, "{name} accepted another configuration");
                accepting.push(name.clone());
            }
            Some((promised, _, None)) => assert!(promised <= Term(1), "{name}: {promised:?}"),
            None => {}
        }
    }
    assert!(accepting.contains(&config.leader), "{accepting:?}");
    assert!(accepting.len() >= 2, "not a majority: {accepting:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_for_one_term_never_both_win() {
    for round in 0..5 {
        let voters = cluster(&format!("race{round}")).await;
        let dial = dialer(&voters);
        let b1 = &voters[&BrokerName::from("b1")].replicas;
        let b2 = &voters[&BrokerName::from("b2")].replicas;
        // Both stand for term 1 on the same base: b2 is its follower.
        let c1 = b1.candidacy(&news(), plan(&NAMES, &[])).unwrap();
        let c2 = b2.candidacy(&news(), plan(&NAMES, &[])).unwrap();
        assert_eq!((c1.term(), c2.term()), (Term(1), Term(1)));
        let soon = Instant::now() + Duration::from_secs(2);
        let ch = news();
        let (e1, e2) = tokio::join!(
            stand(b1, &dial, &ch, c1, soon),
            stand(b2, &dial, &ch, c2, soon)
        );
        let winners: Vec<_> = [e1.unwrap(), e2.unwrap()]
            .into_iter()
            .filter_map(|e| match e {
                Elected::Leads { config, .. } => Some(config),
                _ => None,
            })
            .collect();
        assert!(winners.len() <= 1, "two leaders of term 1: {winners:?}");
        // Whoever won, a majority of registers agree with it.
        for w in &winners {
            let agreeing = voters
                .values()
                .filter(|v| v.replicas.register(&news()).and_then(|r| r.2).as_ref() == Some(w))
                .count();
            assert!(
                agreeing >= 2,
                "the winner's config is held by {agreeing} voters"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_takes_over_once_the_leaders_lease_ran_out() {
    let voters = cluster("takeover").await;
    let dial = dialer(&voters);
    let b1 = &voters[&BrokerName::from("b1")];
    let b2 = &voters[&BrokerName::from("b2")];
    let c1 = b1.replicas.candidacy(&news(), plan(&NAMES, &[])).unwrap();
    let first = leads(
        stand(&b1.replicas, &dial, &news(), c1, deadline())
            .await
            .unwrap(),
    );

    // b1 leads term 1: it gives b2 the configuration and renews its lease
    // at b2 and b3 (the voters that would otherwise elect someone else).
    let leader_dial = |to: &str| dial(&BrokerName::from(to)).unwrap();
    let adopt = pb::Adopt {
        config: Some(switchboard_node::replica::wire::config_to_pb(&first)),
        leader_end: 0,
        epoch: "e1".into(),
        created_micros: 1,
    };
    send(leader_dial("b2"), pb::replicate_request::Kind::Adopt(adopt)).await;
    for to in ["b2", "b3"] {
        let beat = pb::Heartbeat {
            term: 1,
            sent_micros: 0,
        };
        send(
            leader_dial(to),
            pb::replicate_request::Kind::Heartbeat(beat),
        )
        .await;
    }
    let renewed = Instant::now();

    // b1's server goes away. b2 stands for term 2 without waiting for
    // anyone to declare b1 dead, but wins only after the lease it and b3
    // granted b1 ran out.
    b1.stop.cancel();
    let c2 = b2
        .replicas
        .candidacy(&news(), plan(&["b2", "b3", "b1"], &["b1"]))
        .unwrap();
    assert_eq!(c2.term(), Term(2));
    let second = leads(
        stand(&b2.replicas, &dial, &news(), c2, deadline())
            .await
            .unwrap(),
    );
    assert!(
        renewed.elapsed() >= switchboard_node::replica::LEASE - Duration::from_millis(100),
        "won {:?} after b1's renewal, inside its lease",
        renewed.elapsed()
    );
    assert_eq!(second.leader.as_str(), "b2");
    assert_eq!(second.followers, vec![BrokerName::from("b3")]);
    let (promised, _, accepted) = voters[&BrokerName::from("b3")]
        .replicas
        .register(&news())
        .unwrap();
    assert_eq!((promised, accepted), (Term(2), Some(second)));
}

/// Sends one message on a fresh Replicate stream as b1 and waits for its
/// answer.
async fn send(mut client: ReplicaClient<Channel>, kind: pb::replicate_request::Kind) {
    let req = pb::ReplicateRequest {
        leader: "b1".into(),
        channel: "news".into(),
        kind: Some(kind),
    };
    let mut replies = client
        .replicate(futures_util::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().expect("an answer");
    match reply.kind {
        Some(pb::replicate_reply::Kind::Adopted(true)) => {}
        Some(pb::replicate_reply::Kind::LeaseMs(ms)) if ms > 0 => {}
        other => panic!("unexpected answer {other:?}"),
    }
}

/// A voter that does not answer (a frozen process, or one cut off: nothing
/// resets its connections) is not waited for: a majority decides each
/// round. (Waiting for every answer took one call timeout, 500 ms, per
/// round: a second of every frozen or cut-off owner's failover.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_does_not_answer_is_not_waited_for() {
    let voters = cluster("frozen").await;
    // b3's port takes connections (the kernel completes them) and never
    // answers.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut addrs: std::collections::HashMap<BrokerName, std::net::SocketAddr> =
        voters.iter().map(|(n, v)| (n.clone(), v.addr)).collect();
    addrs.insert("b3".into(), frozen.local_addr().unwrap());
    let dial = move |name: &BrokerName| {
        let addr = addrs.get(name)?;
        let channel = switchboard_cluster::dialer::endpoint(&addr.to_string())
            .ok()?
            .connect_lazy();
        Some(ReplicaClient::new(channel))
    };
    let b1 = &voters[&BrokerName::from("b1")].replicas;
    let candidacy = b1.candidacy(&news(), plan(&NAMES, &[])).unwrap();
    let started = Instant::now();
    let config = leads(
        stand(b1, &dial, &news(), candidacy, deadline())
            .await
            .unwrap(),
    );
    let took = started.elapsed();
    assert_eq!(config.leader.as_str(), "b1");
    // Two rounds, each of which waited 500 ms for b3 before.
    assert!(
        took < Duration::from_millis(900),
        "the election took {took:?}"
    );
}

/// A candidate that counted the others out proposes a configuration naming
/// itself alone; only its own register accepts it (the others cannot be
/// reached for the accept round). That configuration may never have been
/// chosen, so standing on it again takes a majority of the voters it was
/// proposed to as well: cut off from them, it wins nothing (before session
/// 19 it won the next term alone, which the others could decide too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unled_configuration_is_stood_on_with_the_voters_it_was_proposed_to() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let voters = cluster("unled").await;
    let reach = dialer(&voters);
    // The prepare round reaches b2 and b3; nothing after it does.
    let dials = AtomicUsize::new(0);
    let prepare_only = |name: &BrokerName| {
        (dials.fetch_add(1, Ordering::SeqCst) < 2)
            .then(|| reach(name))
            .flatten()
    };
    let b1 = &voters[&BrokerName::from("b1")].replicas;
    let alone = plan(&NAMES, &["b2", "b3"]);
    let candidacy = b1.candidacy(&news(), alone.clone()).unwrap();
    let soon = Instant::now() + Duration::from_millis(1500);
    let first = stand(b1, &prepare_only, &news(), candidacy, soon).await;
    assert_eq!(first.unwrap(), Elected::TimedOut);
    let (_, _, accepted) = b1.register(&news()).unwrap();
    let accepted = accepted.expect("its own register accepted its proposal");
    assert_eq!(accepted.voters(), vec![BrokerName::from("b1")]);

    // Standing on it asks the voters it was proposed to, and needs them.
    let candidacy = b1.candidacy(&news(), alone.clone()).unwrap();
    let all: Vec<BrokerName> = NAMES.iter().map(|&n| n.into()).collect();
    assert_eq!(candidacy.voters(), all.as_slice());
    let nobody = |_: &BrokerName| None;
    let soon = Instant::now() + Duration::from_millis(1500);
    let cut_off = stand(b1, &nobody, &news(), candidacy, soon).await;
    assert_eq!(cut_off.unwrap(), Elected::TimedOut);
    // With them, it leads.
    let candidacy = b1.candidacy(&news(), alone).unwrap();
    let config = leads(
        stand(b1, &reach, &news(), candidacy, deadline())
            .await
            .unwrap(),
    );
    assert_eq!(config.leader.as_str(), "b1");
    assert!(config.term > accepted.term);
}
