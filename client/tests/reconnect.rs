//! Reconnects in the middle of a stream against a real in-process server:
//! a dropped socket (recovered: no loss, no repeats), a drained and
//! restarted server (continuity lost, said so, stream continues), a
//! half-open connection found by pings, and a subscriber that lags.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Proxy, TestServer, WAIT};
use switchboard_client::{
    BackoffConfig, Client, ClientEvent, SubscribeOptions, Subscribed, Subscription,
    SubscriptionEvent, close_code,
};
use tokio::sync::broadcast;

fn backoff(initial_ms: u64, max_ms: u64) -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(max_ms),
        factor: 2.0,
    }
}

/// Publishes 1, 2, 3, … until `stop`; returns the last number. A publish
/// that dies with a connection is not retried, so no number goes twice.
fn publish_until(
    client: Client,
    channel: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<u64>)> {
    tokio::spawn(async move {
        let mut n = 0;
        let mut failed = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            if client.publish(channel, n).await.is_err() {
                failed.push(n);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (n, failed)
    })
}

/// Reads a subscription into numbers and `Subscribed` events until `until` holds.
async fn read(
    sub: &mut Subscription,
    got: &mut Vec<(u64, String)>,
    subscribed: &mut Vec<Subscribed>,
    mut on_message: impl FnMut(usize),
    mut until: impl FnMut(&[(u64, String)], &[Subscribed]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !until(got, subscribed) {
        let event = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("stuck after {} messages, {subscribed:?}", got.len()))
            .expect("subscription open");
        match event {
            SubscriptionEvent::Message(p) => {
                got.push((p.data.as_u64().expect("a number"), p.epoch));
                on_message(got.len());
            }
            SubscriptionEvent::Subscribed(s) => subscribed.push(s),
            _ => {}
        }
    }
}

async fn connecting(events: &mut broadcast::Receiver<ClientEvent>) -> (u16, String, Duration) {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(ClientEvent::Connecting {
                code,
                reason,
                delay,
                ..
            })) => return (code, reason, delay),
            Ok(Ok(_)) => continue,
            other => panic!("no Connecting event: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dropped_connection_resumes_without_loss_or_repeats() {
    let server = TestServer::dev().await;
    // A fixed, full-length delay so that each drop really misses publications.
    let reader = Client::builder(server.url())
        .backoff(backoff(150, 150))
        .jitter(|| 0.999)
        .connect();
    let writer = Client::builder(server.url()).connect();
    let mut sub = reader.subscribe("chat:stream").await.unwrap();
    let (mut got, mut subscribed) = (Vec::new(), Vec::new());
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |_, s| !s.is_empty(),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_until(writer, "chat:stream", stop.clone());
    let drops = reader.clone();
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |n| {
            if n == 20 || n == 50 {
                // Drop the socket mid-stream, as a flaky network would.
                let c = drops.clone();
                tokio::spawn(async move { c.reconnect().await });
            }
        },
        |g, s| g.len() >= 60 && s.len() >= 3,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (last, failed) = tokio::time::timeout(WAIT, publisher)
        .await
        .unwrap()
        .unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |g, _| g.len() as u64 >= last,
    )
    .await;

    let numbers: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (1..=last).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert_eq!(subscribed.len(), 3);
    assert!(!subscribed[0].was_recovering);
    for s in &subscribed[1..] {
        assert!(s.was_recovering && s.recovered, "{s:?}");
    }
    let recovered: usize = subscribed[1..].iter().map(|s| s.publications).sum();
    assert!(recovered > 0, "some publications came from recovery");
}

#[tokio::test]
async fn a_drained_and_restarted_server_is_reported_as_lost_continuity() {
    let server = TestServer::dev().await;
    let reader = Client::builder(server.url())
        .backoff(backoff(50, 200))
        .connect();
    let writer = Client::builder(server.url())
        .backoff(backoff(50, 200))
        .connect();
    let mut events = reader.events();
    let mut sub = reader.subscribe("chat:restart").await.unwrap();
    let (mut got, mut subscribed) = (Vec::new(), Vec::new());
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |_, s| !s.is_empty(),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_until(writer, "chat:restart", stop.clone());
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |g, _| g.len() >= 10,
    )
    .await;
    let server = server.restart().await;

    let (code, reason, delay) = connecting(&mut events).await;
    assert_eq!(
        (code, reason.as_str(), delay),
        (1001, "server shutting down", Duration::ZERO),
        "a drain reconnects at once"
    );
    let old_epoch = got[0].1.clone();
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |g, s| s.len() >= 2 && g.iter().filter(|(_, e)| *e != old_epoch).count() >= 5,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (_, failed) = tokio::time::timeout(WAIT, publisher)
        .await
        .unwrap()
        .unwrap();
    assert!(
        failed.len() <= 2,
        "only publishes in flight at the restart fail: {failed:?}"
    );

    let again = &subscribed[1];
    assert!(
        again.was_recovering && !again.recovered,
        "state was lost: {again:?}"
    );
    assert_ne!(again.epoch, old_epoch);
    let numbers: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(numbers, sorted, "publisher order kept, nothing twice");
    drop(server);
}

#[tokio::test]
async fn a_half_open_connection_is_found_by_pings_and_recovered() {
    let server = TestServer::dev().await;
    let proxy = Proxy::start(server.addr).await;
    let reader = Client::builder(proxy.url())
        .ping_interval(Duration::from_millis(300))
        .pong_timeout(Duration::from_millis(300))
        .backoff(backoff(50, 100))
        .connect();
    let writer = Client::builder(server.url()).connect();
    let mut events = reader.events();
    let mut sub = reader.subscribe("chat:halfopen").await.unwrap();
    let (mut got, mut subscribed) = (Vec::new(), Vec::new());
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |_, s| !s.is_empty(),
    )
    .await;
    writer.publish("chat:halfopen", 1).await.unwrap();
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |g, _| g.len() == 1,
    )
    .await;

    proxy.freeze();
    writer.publish("chat:halfopen", 2).await.unwrap();
    writer.publish("chat:halfopen", 3).await.unwrap();
    let (code, _, _) = connecting(&mut events).await;
    assert_eq!(code, close_code::NO_PONG);
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |g, _| g.len() == 3,
    )
    .await;
    assert_eq!(got.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(subscribed[1].recovered);
}

#[tokio::test]
async fn a_request_without_a_reply_times_out() {
    let server = TestServer::dev().await;
    let proxy = Proxy::start(server.addr).await;
    let c = Client::builder(proxy.url())
        .request_timeout(Duration::from_millis(200))
        .ping_interval(Duration::from_secs(60))
        .connect();
    c.connected().await.unwrap();
    proxy.freeze();
    let started = tokio::time::Instant::now();
    assert_eq!(
        c.ping().await,
        Err(switchboard_client::ClientError::Timeout(
            Duration::from_millis(200)
        ))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_lagging_subscriber_loses_nothing() {
    let server = TestServer::dev().await;
    let reader = Client::builder(server.url()).connect();
    let writer = Client::builder(server.url()).connect();
    let mut sub = reader
        .subscribe_with(
            "chat:lag",
            SubscribeOptions {
                capacity: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (mut got, mut subscribed) = (Vec::new(), Vec::new());
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |_, s| !s.is_empty(),
    )
    .await;
    // Thirty publications into a buffer of four, nobody reading.
    for n in 1..=30u64 {
        writer.publish("chat:lag", n).await.unwrap();
    }
    read(
        &mut sub,
        &mut got,
        &mut subscribed,
        |_| {},
        |g, _| g.len() >= 30,
    )
    .await;
    assert_eq!(
        got.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert!(
        subscribed[1..]
            .iter()
            .all(|s| s.was_recovering && s.recovered),
        "{subscribed:?}"
    );
    assert!(
        subscribed.len() >= 2,
        "the lag was recovered by resubscribing"
    );
}
