//! Mutual TLS between the cluster's nodes, against real processes with
//! certificates made in the test: outsiders (no TLS, no certificate, a
//! certificate from another CA) are refused on every broker RPC; a
//! certificate lets its holder act only in its role and as itself; nodes
//! refuse to start without credentials, or with a certificate for another
//! name; and certificates re-issued under load are taken up by new
//! handshakes without losing a publication or dropping a connection.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde_json::json;
use switchboard_cluster::membership::Role;
use switchboard_proto::broker::v1 as pb;
use switchboard_testkit::{
    WAIT,
    broker_client::{Presenting, broker_client, served_serial},
    certificates::{ClusterCa, strs},
    client::Client,
    cluster::{self, counter, scenario_config},
    gossip_key::gossip_key,
    http,
    process::Process,
};
use tonic::{Code, Status, transport::Channel};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

type Broker = pb::broker_client::BrokerClient<Channel>;

async fn start_broker(ca: &ClusterCa, name: &str) -> Process {
    let args = ca.secured(&[
        "node",
        "--replication-factor",
        "1",
        "--name",
        name,
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
    ]);
    Process::start_announcing(Path::new(BIN), &strs(&args), "grpc://")
        .await
        .unwrap()
}

async fn metrics(p: &Process) -> String {
    let addr = p.announced("http://").expect("http address");
    http::get(addr, "/metrics").await.unwrap().1
}

/// Calls every broker RPC once, acting as `me` wherever a request names a
/// gateway or broker; returns each RPC's outcome.
async fn call_every_rpc(c: &mut Broker, me: &str) -> Vec<(&'static str, Result<(), Status>)> {
    let ch = || "chat:tls".to_owned();
    let gw = || me.to_owned();
    vec![
        (
            "attach",
            c.attach(pb::AttachRequest {
                gateway: gw(),
                batches: false,
            })
            .await
            .map(drop),
        ),
        (
            "detach",
            c.detach(pb::DetachRequest { gateway: gw() })
                .await
                .map(drop),
        ),
        (
            "subscribe",
            c.subscribe(pb::SubscribeRequest {
                gateway: gw(),
                channel: ch(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "unsubscribe",
            c.unsubscribe(pb::UnsubscribeRequest {
                gateway: gw(),
                channel: ch(),
            })
            .await
            .map(drop),
        ),
        (
            "leave",
            c.leave(pb::LeaveRequest {
                channel: ch(),
                client_id: "c1".into(),
            })
            .await
            .map(drop),
        ),
        (
            "publish",
            c.publish(pb::PublishRequest {
                channel: ch(),
                from: "admin".into(),
                data_json: "{}".into(),
                idempotency_key: None,
            })
            .await
            .map(drop),
        ),
        (
            "publish_stream",
            c.publish_stream(tokio_stream::iter([pb::PublishCalls {
                calls: vec![pb::PublishCall {
                    id: 1,
                    request: Some(pb::PublishRequest {
                        channel: ch(),
                        from: "admin".into(),
                        data_json: "{}".into(),
                        idempotency_key: None,
                    }),
                    ..Default::default()
                }],
            }]))
            .await
            .map(drop),
        ),
        (
            "presence",
            c.presence(pb::PresenceRequest {
                channel: ch(),
                after: None,
                limit: 10,
            })
            .await
            .map(drop),
        ),
        (
            "presence_stats",
            c.presence_stats(pb::ChannelRequest { channel: ch() })
                .await
                .map(drop),
        ),
        (
            "history",
            c.history(pb::HistoryRequest {
                channel: ch(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "control",
            c.control(pb::ControlRequest {
                channel: ch(),
                command: b"{}".to_vec().into(),
            })
            .await
            .map(drop),
        ),
        (
            "channels",
            c.channels(pb::ChannelsRequest::default()).await.map(drop),
        ),
        ("nodes", c.nodes(pb::Empty {}).await.map(drop)),
        (
            "release",
            c.release(pb::ReleaseRequest {
                channel: ch(),
                to: me.to_owned(),
                holds_copy: false,
            })
            .await
            .map(drop),
        ),
        (
            "claim",
            c.claim(pb::ClaimRequest {
                from: me.to_owned(),
                channels: vec![ch()],
            })
            .await
            .map(drop),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_are_refused_on_every_rpc() {
    let ca = ClusterCa::shared();
    let b1 = start_broker(ca, "b1").await;
    let grpc = b1.announced("grpc://").unwrap();
    let other_ca = ClusterCa::new().unwrap();
    let forged = other_ca.node("g1", Role::Gateway);
    let outsiders = [
        ("no TLS", Presenting::NoTls),
        ("no certificate", Presenting::NoCertificate),
        ("another CA's certificate", Presenting::Certificate(&forged)),
    ];
    for (who, presenting) in outsiders {
        let mut c = broker_client(grpc, "b1", &ca.ca_cert(), presenting).unwrap();
        for (rpc, outcome) in call_every_rpc(&mut c, "g1").await {
            let status = outcome.expect_err(&format!("{who}: {rpc} went through"));
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                ),
                "{who}: {rpc}: not refused at the connection: {status:?}"
            );
        }
    }
    // The broker saw and refused the handshakes (it was not the clients
    // that gave up).
    let m = metrics(&b1).await;
    assert!(
        counter(
            &m,
            "switchboard_tls_handshakes_refused_total{reason=\"handshake\"}"
        ) >= 2.0,
        "{m}"
    );
    // The same client with the cluster's certificate gets through.
    let g1 = ca.node("g1", Role::Gateway);
    let mut c = broker_client(grpc, "b1", &ca.ca_cert(), Presenting::Certificate(&g1)).unwrap();
    c.nodes(pb::Empty {})
        .await
        .expect("a gateway of the cluster may list nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_acts_only_in_its_role_and_as_itself() {
    let ca = ClusterCa::shared();
    let b1 = start_broker(ca, "b1").await;
    let grpc = b1.announced("grpc://").unwrap();
    let client = |name: &str, role| {
        let certs = ca.node(name, role);
        broker_client(grpc, "b1", &ca.ca_cert(), Presenting::Certificate(&certs)).unwrap()
    };
    let denied = |outcome: Result<(), Status>, what: &str| {
        let status = outcome.expect_err(what);
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    };

    // A gateway: no broker-to-broker calls, and no acting as another gateway.
    let mut g1 = client("g1", Role::Gateway);
    for (rpc, outcome) in call_every_rpc(&mut g1, "g2").await {
        if matches!(
            rpc,
            "attach" | "detach" | "subscribe" | "unsubscribe" | "release" | "claim"
        ) {
            denied(outcome, &format!("gateway g1 calling {rpc} as g2"));
        } else {
            let status = outcome.err();
            assert_ne!(
                status.map(|s| s.code()),
                Some(Code::PermissionDenied),
                "{rpc}"
            );
        }
    }
    for (rpc, outcome) in call_every_rpc(&mut g1, "g1").await {
        match rpc {
            "release" | "claim" => denied(outcome, &format!("gateway g1 calling {rpc}")),
            _ => assert_ne!(
                outcome.err().map(|s| s.code()),
                Some(Code::PermissionDenied),
                "{rpc}"
            ),
        }
    }

    // A broker: only broker calls, and only as itself.
    let mut b2 = client("b2", Role::Broker);
    for (rpc, outcome) in call_every_rpc(&mut b2, "b3").await {
        denied(outcome, &format!("broker b2 calling {rpc} as b3"));
    }
    for (rpc, outcome) in call_every_rpc(&mut b2, "b2").await {
        match rpc {
            "release" | "claim" => {
                assert_ne!(
                    outcome.err().map(|s| s.code()),
                    Some(Code::PermissionDenied),
                    "{rpc}"
                )
            }
            _ => denied(outcome, &format!("broker b2 calling gateway RPC {rpc}")),
        }
    }

    let m = metrics(&b1).await;
    let impersonations: f64 = [
        "attach",
        "detach",
        "subscribe",
        "unsubscribe",
        "release",
        "claim",
    ]
    .iter()
    .map(|rpc| {
        counter(
            &m,
            &format!(
                "switchboard_broker_rpc_denied_total{{rpc=\"{rpc}\",reason=\"impersonation\"}}"
            ),
        )
    })
    .sum();
    assert!(impersonations >= 6.0, "{m}");
    assert!(
        counter(
            &m,
            "switchboard_broker_rpc_denied_total{rpc=\"release\",reason=\"role\"}"
        ) >= 1.0,
        "{m}"
    );
    let log = b1.log();
    assert!(log.contains("broker RPC refused"), "{log}");
}

async fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(WAIT, tokio::process::Command::new(BIN).args(args).output())
        .await
        .expect("exits at once")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn nodes_without_credentials_or_with_someone_elses_refuse_to_start() {
    let node = [
        "node",
        "--name",
        "b1",
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
        "--replication-factor",
        "1",
    ];
    let (code, stderr) = refused_start(&node).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "error: cluster credentials missing: --tls-ca, --tls-cert, --tls-key, --gossip-key \
             (or --insecure for a cluster that trusts its network)"
        ),
        "{stderr}"
    );
    let gateway = [
        "gateway",
        "--name",
        "g1",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        "b1=127.0.0.1:1",
    ];
    let (code, stderr) = refused_start(&gateway).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cluster credentials missing: --tls-ca"),
        "{stderr}"
    );

    let ca = ClusterCa::shared();
    // b1's certificate for a node named b9.
    let mut as_b9: Vec<String> = node.iter().map(|a| (*a).to_owned()).collect();
    as_b9[2] = "b9".into();
    as_b9.extend(ca.broker_args("b1"));
    as_b9.extend(["--gossip-key".to_owned(), gossip_key().to_owned()]);
    let (code, stderr) = refused_start(&strs(&as_b9)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("the certificate names broker b1, but this node is broker b9"),
        "{stderr}"
    );
    // A broker's certificate for a gateway of the same name.
    let mut gw: Vec<String> = gateway.iter().map(|a| (*a).to_owned()).collect();
    gw[2] = "b1".into();
    gw.extend(ca.broker_args("b1"));
    let (code, stderr) = refused_start(&strs(&gw)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("but this node is gateway b1"), "{stderr}");
    // A name that is not a DNS label.
    let mut upper: Vec<String> = node.iter().map(|a| (*a).to_owned()).collect();
    upper[2] = "B_1".into();
    upper.push("--insecure".into());
    let (code, stderr) = refused_start(&strs(&upper)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is not a DNS label"), "{stderr}");

    // A gateway certificate for g1 covers its replicas g1-<anything>
    // (a Deployment's pods sharing one), not g2.
    let replica: Vec<String> = ca.secured(&[
        "gateway",
        "--name",
        "g1",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        "b1=127.0.0.1:1",
    ]);
    let mut replica = replica;
    replica[2] = "g1-7d9f-x2x7q".into();
    Process::start(Path::new(BIN), &strs(&replica))
        .await
        .unwrap();
    replica[2] = "g2".into();
    let (code, stderr) = refused_start(&strs(&replica)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("the certificate names gateway g1, but this node is gateway g2"),
        "{stderr}"
    );

    // --insecure starts, with a warning.
    let mut insecure: Vec<&str> = node.to_vec();
    insecure.push("--insecure");
    let p = Process::start_announcing(Path::new(BIN), &insecure, "grpc://")
        .await
        .unwrap();
    assert!(
        p.log()
            .contains("--insecure: gRPC between nodes is neither authenticated"),
        "{}",
        p.log()
    );
}

/// The serial a node's metrics say it presents now.
fn serial_in_use(metrics: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("switchboard_tls_certificate_serial_info{serial=\"")?;
        let (serial, value) = rest.split_once("\"}")?;
        (value.trim() == "1").then(|| serial.to_owned())
    })
}

async fn node_metrics(addr: SocketAddr) -> String {
    http::get(addr, "/metrics")
        .await
        .map(|r| r.1)
        .unwrap_or_default()
}

/// Waits until the node whose metrics are at `addr` presents a serial
/// other than `old`; returns it.
async fn until_rotated(addr: SocketAddr, old: &str) -> String {
    // Files are polled every 5 s.
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        if let Some(serial) = serial_in_use(&node_metrics(addr).await)
            && serial != old
        {
            return serial;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never took up its new certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotated_under_load_lose_nothing_and_drop_no_connection() {
    let ca = ClusterCa::new().unwrap();
    let bin = Path::new(BIN);
    let broker_args = |name: &str, seed: Option<&str>| {
        let mut args = vec![
            "node",
            "--replication-factor",
            "1",
            "--name",
            name,
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
        ];
        if let Some(seed) = seed {
            args.extend(["--seed", seed]);
        }
        ca.secured(&args)
    };
    let b1 = Process::start_announcing(bin, &strs(&broker_args("b1", None)), "grpc://")
        .await
        .unwrap();
    let seed = b1.announced("gossip://").unwrap().to_string();
    let b2 = Process::start_announcing(bin, &strs(&broker_args("b2", Some(&seed))), "grpc://")
        .await
        .unwrap();
    let config = scenario_config("tls-rotation").unwrap();
    let gateway = |name: &str| {
        ca.secured(&[
            "gateway",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--seed",
            &seed,
            "--config",
            &config,
        ])
    };
    let g1 = Process::start(bin, &strs(&gateway("g1"))).await.unwrap();
    let g2 = Process::start(bin, &strs(&gateway("g2"))).await.unwrap();

    let channels: Vec<String> = (0..6).map(|i| format!("rot:{i}")).collect();
    let mut sub = Client::connect(&g2.ws_url()).await.unwrap();
    for ch in &channels {
        switchboard_testkit::cluster::subscribe_once_routed(&mut sub, ch)
            .await
            .unwrap();
    }
    let mut publisher = Client::connect(&g1.ws_url()).await.unwrap();
    // Both gateways route to both brokers before the clock starts.
    for ch in &channels {
        publisher.publish(ch, json!(-1)).await.unwrap();
        assert_eq!(sub.message(ch).await.unwrap()["data"], -1);
    }
    let attached_before = [&b1, &b2].map(|b| b.log().matches("gateway attached").count());

    let stop = tokio_util::sync::CancellationToken::new();
    let (total_tx, mut total_rx) = tokio::sync::oneshot::channel::<u64>();
    let publishing = tokio::spawn({
        let (stop, channels) = (stop.clone(), channels.clone());
        async move {
            let mut sent = 0u64;
            while !stop.is_cancelled() {
                let ch = &channels[sent as usize % channels.len()];
                publisher
                    .publish(ch, json!(sent))
                    .await
                    .expect("publish acknowledged");
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = total_tx.send(sent);
            sent
        }
    });
    // The subscriber reads as it goes, as a real one would.
    let receiving = tokio::spawn(async move {
        let mut got: Vec<u64> = Vec::new();
        let mut total = None;
        loop {
            if total.is_some_and(|t| got.len() as u64 >= t) {
                return got;
            }
            tokio::select! {
                t = &mut total_rx, if total.is_none() => total = Some(t.unwrap()),
                f = sub.next() => {
                    let f = f.expect("the subscriber's connection stays up");
                    if f["type"] == "message" {
                        got.push(f["data"].as_u64().expect("a sequence number"));
                    }
                }
            }
        }
    });

    // One node at a time: re-issue its certificate to the same paths.
    let nodes = [
        ("b1", Role::Broker, b1.announced("http://").unwrap()),
        ("b2", Role::Broker, b2.announced("http://").unwrap()),
        ("g1", Role::Gateway, g1.addr),
        ("g2", Role::Gateway, g2.addr),
    ];
    let g_certs = ca.node("g1", Role::Gateway);
    for (name, role, metrics_at) in nodes {
        let old = serial_in_use(&node_metrics(metrics_at).await).expect("a serial in use");
        ca.issue(name, role).unwrap();
        let new = until_rotated(metrics_at, &old).await;
        if role == Role::Broker {
            let grpc = if name == "b1" { &b1 } else { &b2 }
                .announced("grpc://")
                .unwrap();
            let served = served_serial(grpc, name, &ca.ca_cert(), &g_certs)
                .await
                .unwrap();
            assert_eq!(
                served, new,
                "{name}: a new handshake still gets the old certificate"
            );
        }
        println!("rotated {name}: {old} -> {new}");
    }
    stop.cancel();
    let sent = publishing.await.unwrap();
    assert!(sent > 100, "only {sent} publications during the rotation");

    // Every publication arrived once, in order per channel.
    let got = receiving.await.unwrap();
    let n = channels.len() as u64;
    let mut last = vec![None::<u64>; channels.len()];
    for seq in &got {
        let i = (seq % n) as usize;
        assert!(
            last[i].is_none_or(|prev| *seq == prev + n),
            "{seq} after {:?}",
            last[i]
        );
        last[i] = Some(*seq);
    }
    let mut all = got.clone();
    all.sort_unstable();
    assert_eq!(all, (0..sent).collect::<Vec<_>>());
    // No gateway had to attach again: the connections lived through it.
    let attached_after = [&b1, &b2].map(|b| b.log().matches("gateway attached").count());
    assert_eq!(attached_before, attached_after);
    let (b1m, g1m) = (metrics(&b1).await, node_metrics(g1.addr).await);
    assert_eq!(
        counter(&b1m, "switchboard_tls_reloads_total{result=\"ok\"}"),
        1.0,
        "{b1m}"
    );
    assert_eq!(
        counter(&g1m, "switchboard_tls_reloads_total{result=\"ok\"}"),
        1.0,
        "{g1m}"
    );
}

/// A member that gossips a name its address cannot prove: b9, with the
/// cluster's gossip key and a real certificate for b9, advertising b1's
/// gRPC address. Gossip alone would put b9 in every ring and send its share
/// of the channels to an address that presents b1's certificate, where
/// every dialer refuses it. Instead no node counts b9: every channel stays
/// routed, through the gateway and between the brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_address_does_not_prove_its_name_stays_out_of_the_ring() {
    let bin = Path::new(BIN);
    let b1 = cluster::broker(bin, "b1", None).await.unwrap();
    let seed = cluster::seed_of(&b1).unwrap();
    let b2 = cluster::broker(bin, "b2", Some(&seed)).await.unwrap();
    let b1_grpc = b1.announced("grpc://").unwrap().to_string();
    let squatter = ClusterCa::shared().secured(&[
        "node",
        "--replication-factor",
        "1",
        "--name",
        "b9",
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
        "--seed",
        &seed,
        "--advertise",
        &b1_grpc,
    ]);
    let b9 = Process::start_announcing(bin, &strs(&squatter), "grpc://")
        .await
        .unwrap();
    let config = scenario_config("proof").unwrap();
    let g1 = cluster::gateway(bin, "g1", &seed, &config).await.unwrap();
    // Gossip brought b9 to everyone, and each left it out.
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    for node in [&g1, &b1, &b2] {
        while !node
            .log()
            .lines()
            .any(|l| l.contains("broker left out of the ring") && l.contains("b9"))
        {
            assert!(tokio::time::Instant::now() < deadline, "{}", node.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut client = Client::connect(&g1.ws_url()).await.unwrap();
    for i in 0..24 {
        let channel = format!("chat:proof-{i}");
        cluster::subscribe_once_routed(&mut client, &channel)
            .await
            .unwrap();
        client.publish(&channel, json!(i)).await.unwrap();
        assert_eq!(client.message(&channel).await.unwrap()["data"], json!(i));
    }
    drop(b9);
}
