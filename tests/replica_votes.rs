//! A broker as a replication voter and follower (docs/replication.md), over
//! its real gRPC port with mutual TLS: its promises survive `kill -9`, a
//! lease it granted holds off other candidates, an old leader's appends
//! are refused once a later term was promised, only brokers may call it,
//! each only as itself, and a broker without a data directory votes for
//! nobody.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use switchboard_proto::replica::v1::{
    self as pb, replica_client::ReplicaClient, replicate_reply::Kind, replicate_request,
};
use switchboard_testkit::{
    WAIT,
    broker_client::{Presenting, replica_client},
    certificates::ClusterCa,
    cluster::broker_with,
    process::Process,
};
use tonic::{Code, transport::Channel};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const CHANNEL: &str = "news";

fn data_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sb-replica-{tag}-{}", std::process::id()))
}

async fn start(dir: Option<&Path>) -> anyhow::Result<(Process, SocketAddr)> {
    let dir = dir.map(|d| d.to_str().expect("UTF-8 temp path").to_owned());
    let extra: Vec<&str> = match &dir {
        Some(d) => vec!["--data-dir", d],
        None => vec![],
    };
    let b = broker_with(Path::new(BIN), "b1", None, &extra).await?;
    let addr = b.announced("grpc://").context("no gRPC address")?;
    Ok((b, addr))
}

/// A client of b1's replication service presenting `as_name`'s broker
/// certificate.
fn client(addr: SocketAddr, as_name: &str) -> ReplicaClient<Channel> {
    use switchboard_cluster::membership::Role;
    let ca = ClusterCa::shared();
    let certs = ca.node(as_name, Role::Broker);
    replica_client(addr, "b1", &ca.ca_cert(), Presenting::Certificate(&certs)).unwrap()
}

async fn prepare(
    c: &mut ReplicaClient<Channel>,
    candidate: &str,
    term: u64,
) -> Result<pb::PrepareReply, tonic::Status> {
    let req = pb::PrepareRequest {
        channel: CHANNEL.into(),
        term,
        candidate: candidate.into(),
    };
    Ok(c.prepare(req).await?.into_inner())
}

async fn retire(
    c: &mut ReplicaClient<Channel>,
    leader: &str,
    term: u64,
    end: u64,
) -> Result<pb::RetireReply, tonic::Status> {
    let req = pb::RetireRequest {
        channel: CHANNEL.into(),
        term,
        leader: leader.into(),
        end,
    };
    Ok(c.retire(req).await?.into_inner())
}

/// Prepares until the answer is not "a lease is held" (a restarted voter
/// refuses everyone for one lease period, and so does one that granted a
/// lease): what it answers then is its promise.
async fn prepare_after_leases(
    c: &mut ReplicaClient<Channel>,
    candidate: &str,
    term: u64,
) -> pb::PrepareReply {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = prepare(c, candidate, term).await.expect("prepare answered");
        if reply.refusal() != pb::Refusal::LeaseHeld {
            return reply;
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(reply.lease_left_ms.clamp(10, 1000))).await;
    }
}

fn config(term: u64, leader: &str) -> pb::ReplicaConfig {
    pb::ReplicaConfig {
        term,
        leader: leader.into(),
        followers: vec!["b1".into()],
        witness: "w1".into(),
        holders: vec![],
    }
}

/// The leader's stream to b1: sends each message and reads its answer.
struct Stream {
    tx: tokio::sync::mpsc::Sender<pb::ReplicateRequest>,
    rx: tonic::Streaming<pb::ReplicateReply>,
    leader: String,
}

impl Stream {
    async fn open(c: &mut ReplicaClient<Channel>, leader: &str) -> Self {
        let (tx, requests) = tokio::sync::mpsc::channel(16);
        let requests = tokio_stream::wrappers::ReceiverStream::new(requests);
        let rx = c.replicate(requests).await.unwrap().into_inner();
        Self {
            tx,
            rx,
            leader: leader.into(),
        }
    }

    async fn send(&mut self, kind: replicate_request::Kind) -> Result<Kind, tonic::Status> {
        let req = pb::ReplicateRequest {
            leader: self.leader.clone(),
            channel: CHANNEL.into(),
            kind: Some(kind),
        };
        self.tx.send(req).await.expect("stream open");
        let reply = self.rx.message().await?.expect("a reply");
        Ok(reply.kind.expect("a reply kind"))
    }

    async fn append(&mut self, term: u64, offset: u64, committed: u64) -> Kind {
        let append = pb::Append {
            term,
            offset,
            frame: format!("{{\"offset\":{offset}}}").into(),
            idempotency_key: String::new(),
            committed,
            published_micros: 1,
            log_start: 1,
        };
        self.send(replicate_request::Kind::Append(append))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promises_survive_kill_9_and_fence_an_old_leader() {
    let dir = data_dir("votes");
    let _ = std::fs::remove_dir_all(&dir);
    let (mut b1, addr) = start(Some(&dir)).await.unwrap();

    // Two candidates for term 3: the first is promised, the second not.
    let mut c1 = client(addr, "c1");
    let mut c2 = client(addr, "c2");
    let first = prepare_after_leases(&mut c1, "c1", 3).await;
    assert!(first.promised, "{first:?}");
    let second = prepare(&mut c2, "c2", 3).await.unwrap();
    assert!(!second.promised);
    assert_eq!(
        (second.refusal(), second.promised_term),
        (pb::Refusal::Older, 3)
    );

    // kill -9 and restart on the same data directory: the promise to c1
    // for term 3 is still there.
    b1.kill().await.unwrap();
    let (mut b1, addr) = start(Some(&dir)).await.unwrap();
    let mut c2 = client(addr, "c2");
    let after = prepare_after_leases(&mut c2, "c2", 3).await;
    assert!(!after.promised, "a restarted voter promised term 3 twice");
    assert_eq!(
        (after.refusal(), after.promised_term),
        (pb::Refusal::Older, 3)
    );

    // c2 wins term 4 (its config accepted), adopts b1 as follower and
    // appends; b1 stores in order and asks for what it missed.
    let commit = c2
        .commit(pb::CommitRequest {
            channel: CHANNEL.into(),
            config: Some(config(4, "c2")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(commit.accepted);
    let mut leader = Stream::open(&mut c2, "c2").await;
    let adopt = pb::Adopt {
        config: Some(config(4, "c2")),
        leader_end: 0,
        epoch: "e1".into(),
        created_micros: 1,
    };
    let adopted = leader.send(replicate_request::Kind::Adopt(adopt)).await;
    assert_eq!(adopted.unwrap(), Kind::Adopted(true));
    assert_eq!(leader.append(4, 1, 0).await, Kind::Stored(1));
    assert_eq!(leader.append(4, 2, 1).await, Kind::Stored(2));
    assert_eq!(leader.append(4, 4, 2).await, Kind::Gap(3));

    // A lease granted to c2 holds off a candidate for term 5 while it runs.
    let beat = pb::Heartbeat {
        term: 4,
        sent_micros: 0,
    };
    let lease = leader.send(replicate_request::Kind::Heartbeat(beat)).await;
    assert!(matches!(lease.unwrap(), Kind::LeaseMs(ms) if ms > 0));
    let mut c3 = client(addr, "c3");
    let held = prepare(&mut c3, "c3", 5).await.unwrap();
    assert_eq!(held.refusal(), pb::Refusal::LeaseHeld, "{held:?}");
    let promised = prepare_after_leases(&mut c3, "c3", 5).await;
    assert!(promised.promised);
    assert_eq!(
        promised.log_end,
        Some(2),
        "a data replica reports its log end"
    );

    // c2's appends are refused now: it can never commit again in term 4.
    assert_eq!(leader.append(4, 3, 2).await, Kind::Stale(5));
    // Nor can it have the channel forgotten while the voter holds more
    // than it counted.
    let kept = retire(&mut c2, "c2", 4, 0).await.unwrap();
    let answer = (kept.forgotten, kept.promised, kept.configured);
    assert_eq!(answer, (false, 5, 4));
    // Counting all of it, it can: a bare promise of a later term keeps
    // nothing (no configuration was made in it), and the floor the voter
    // leaves keeps the promise.
    assert!(retire(&mut c2, "c2", 4, 2).await.unwrap().forgotten);

    // And the promise to c3 survives another kill -9, as that floor.
    b1.kill().await.unwrap();
    let (_b1, addr) = start(Some(&dir)).await.unwrap();
    let mut c1 = client(addr, "c1");
    let after = prepare_after_leases(&mut c1, "c1", 5).await;
    assert_eq!(
        (after.refusal(), after.promised_term),
        (pb::Refusal::Older, 5)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_brokers_vote_each_as_itself_and_only_with_a_data_dir() {
    use switchboard_cluster::membership::Role;
    let dir = data_dir("auth");
    let _ = std::fs::remove_dir_all(&dir);
    let (_b1, addr) = start(Some(&dir)).await.unwrap();
    let ca = ClusterCa::shared();

    // A broker certificate acting as another broker.
    let mut c2 = client(addr, "c2");
    let denied = prepare(&mut c2, "c1", 1).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // A gateway's certificate.
    let gateway = ca.node("g1", Role::Gateway);
    let mut g1 =
        replica_client(addr, "b1", &ca.ca_cert(), Presenting::Certificate(&gateway)).unwrap();
    let denied = prepare(&mut g1, "g1", 1).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // Nor retire a channel as another broker, or as a gateway.
    let denied = retire(&mut c2, "c1", 1, 0).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = retire(&mut g1, "g1", 1, 0).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // No certificate at all.
    let mut anon = replica_client(addr, "b1", &ca.ca_cert(), Presenting::NoCertificate).unwrap();
    assert!(prepare(&mut anon, "c1", 1).await.is_err());

    // Without a data directory: no votes, with the reason.
    let (_b2, addr) = start(None).await.unwrap();
    let mut c1 = client(addr, "c1");
    let refused = prepare(&mut c1, "c1", 1).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("data directory"), "{refused:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
