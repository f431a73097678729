//! The client against a real in-process server: requests and their
//! replies, errors, tokens, and the server's advice not to come back.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use common::{ForTest, Settings, TestServer, WAIT, token};
use serde_json::json;
use switchboard_client::{
    Client, ClientError, ClientEvent, HistoryOptions, State, SubscriptionEvent,
};
use tokio::sync::broadcast;

async fn subscribed(sub: &mut switchboard_client::Subscription) -> switchboard_client::Subscribed {
    match sub.next_within(WAIT).await {
        Some(SubscriptionEvent::Subscribed(s)) => s,
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

async fn message(sub: &mut switchboard_client::Subscription) -> switchboard_client::Publication {
    loop {
        match sub.next_within(WAIT).await {
            Some(SubscriptionEvent::Message(p)) => return p,
            Some(_) => continue,
            None => panic!("no message within the wait"),
        }
    }
}

/// The next event that `pick` accepts.
async fn event<T>(
    events: &mut broadcast::Receiver<ClientEvent>,
    mut pick: impl FnMut(ClientEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("event within the wait")
            .expect("events open");
        if let Some(t) = pick(e) {
            return t;
        }
    }
}

#[tokio::test]
async fn publish_subscribe_presence_history_ping() {
    let server = TestServer::dev().await;
    let alice = Client::builder(server.url())
        .token(token("alice", Duration::from_secs(600)))
        .connect();
    let (client_id, user) = alice.connected().await.unwrap();
    assert_eq!(user, "alice");
    let client_id = client_id.unwrap();

    let mut sub = alice.subscribe("chat:basics").await.unwrap();
    let s = subscribed(&mut sub).await;
    assert!(!s.was_recovering && s.recoverable);

    let anon = Client::builder(server.url()).connect();
    let pos = anon.publish("chat:basics", json!({"n": 1})).await.unwrap();
    anon.publish_no_ack("chat:basics", json!({"n": 2}))
        .await
        .unwrap();
    anon.publish("chat:basics", serde_json::Value::Null)
        .await
        .unwrap();
    let got: Vec<_> = [
        message(&mut sub).await,
        message(&mut sub).await,
        message(&mut sub).await,
    ]
    .into_iter()
    .map(|p| (p.offset, p.data))
    .collect();
    assert_eq!(
        got,
        [
            (pos.offset, json!({"n": 1})),
            (pos.offset + 1, json!({"n": 2})),
            (pos.offset + 2, serde_json::Value::Null),
        ]
    );

    let presence = alice.presence("chat:basics").await.unwrap();
    assert_eq!(presence.len(), 1);
    assert_eq!(presence[0].client_id, client_id);
    let stats = sub.presence_stats().await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));

    let newest = alice
        .history(
            "chat:basics",
            HistoryOptions {
                limit: Some(2),
                reverse: true,
                since: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        newest
            .publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        [pos.offset + 2, pos.offset + 1]
    );
    let since = sub
        .history(HistoryOptions {
            since: Some(pos.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.publications.len(), 2);
    assert_eq!(since.complete, Some(true));
    assert!(alice.ping().await.unwrap() < WAIT);
}

#[tokio::test]
async fn joins_and_leaves_reach_subscribers() {
    let server = TestServer::dev().await;
    let a = Client::builder(server.url()).connect();
    let mut sub = a.subscribe("chat:joins").await.unwrap();
    subscribed(&mut sub).await;
    let b = Client::builder(server.url())
        .token(token("bob", Duration::from_secs(600)))
        .connect();
    let b_sub = b.subscribe("chat:joins").await.unwrap();
    // Our own join comes first, then bob's.
    let joined = loop {
        match sub.next_within(WAIT).await {
            Some(SubscriptionEvent::Join(info)) if info.user_id == "bob" => break info,
            Some(SubscriptionEvent::Join(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    b_sub.unsubscribe().await;
    match sub.next_within(WAIT).await {
        Some(SubscriptionEvent::Leave(info)) => assert_eq!(info.client_id, joined.client_id),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_carry_their_codes() {
    let server = TestServer::dev().await;
    let c = Client::builder(server.url()).connect();
    let err = c.publish("bad channel", 1).await.unwrap_err();
    assert_eq!(err.code(), 113);
    assert!(matches!(
        c.history("#someone", HistoryOptions::default()).await,
        Err(ClientError::Server { code: 103, .. })
    ));

    let mut bad = c.subscribe("no spaces allowed").await.unwrap();
    match bad.next_within(WAIT).await {
        Some(SubscriptionEvent::Unsubscribed { error }) => assert_eq!(error.code(), 113),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        bad.next_within(WAIT).await,
        None,
        "the subscription is over"
    );

    let _sub = c.subscribe("chat:once").await.unwrap();
    assert!(matches!(
        c.subscribe("chat:once").await,
        Err(ClientError::AlreadySubscribed(_))
    ));

    let mut events = c.events();
    c.publish_no_ack("#nobody", 1).await.unwrap();
    let refused = event(&mut events, |e| match e {
        ClientEvent::Error(e) => Some(e),
        _ => None,
    })
    .await;
    assert_eq!(refused.code(), 103);
    assert!(matches!(c.state(), State::Connected { .. }));
}

#[tokio::test]
async fn requests_made_while_connecting_wait_for_the_connection() {
    let server = TestServer::dev().await;
    let c = Client::builder(server.url()).connect();
    assert_eq!(c.state(), State::Connecting);
    c.publish("chat:early", "x").await.unwrap();
}

#[tokio::test]
async fn the_token_provider_is_called_to_connect_and_before_expiry() {
    let server = TestServer::dev().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    // Two-second tokens, renewed at about 1.6 s; the server closes at expiry.
    let c = Client::builder(server.url())
        .token_provider(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, ClientError>(token("carol", Duration::from_secs(2))) }
        })
        .connect();
    let mut events = c.events();
    let (client_id, _) = c.connected().await.unwrap();
    for _ in 0..2 {
        event(&mut events, |e| match e {
            ClientEvent::Refreshed { .. } => Some(()),
            ClientEvent::Connecting { .. } => panic!("reconnected: {e:?}"),
            _ => None,
        })
        .await;
    }
    assert!(calls.load(Ordering::SeqCst) >= 3);
    assert_eq!(
        c.connected().await.unwrap().0,
        client_id,
        "one connection throughout"
    );
}

#[tokio::test]
async fn a_failing_token_provider_is_retried() {
    let server = TestServer::dev().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let c = Client::builder(server.url())
        .backoff(switchboard_client::BackoffConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(20),
            factor: 2.0,
        })
        .token_provider(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err("token service down".into())
                } else {
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(token(
                        "dave",
                        Duration::from_secs(600),
                    ))
                }
            }
        })
        .connect();
    assert_eq!(c.connected().await.unwrap().1, "dave");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_token_ends_the_client() {
    let server = TestServer::dev().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let c = Client::builder(server.url())
        .token_provider(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, ClientError>("not-a-jwt".to_owned()) }
        })
        .connect();
    assert_eq!(c.connected().await, Err(ClientError::Closed));
    assert!(matches!(c.state(), State::Disconnected { code: 4001, .. }));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no second attempt");
    assert_eq!(c.ping().await, Err(ClientError::Closed));
}

#[tokio::test]
async fn a_close_with_reconnect_false_is_final() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_message_bytes = 1024;
    let server = TestServer::start(s).await;
    let c = Client::builder(server.url()).connect();
    let mut sub = c.subscribe("chat:big").await.unwrap();
    subscribed(&mut sub).await;
    let err = c.publish("chat:big", "x".repeat(2000)).await.unwrap_err();
    assert_eq!(err, ClientError::ConnectionLost);
    assert_eq!(
        c.state(),
        State::Disconnected {
            code: 1009,
            reason: "message too big".into()
        }
    );
    loop {
        match sub.next_within(WAIT).await {
            Some(SubscriptionEvent::Join(_)) => continue, // our own
            Some(SubscriptionEvent::Subscribing { code: 1009, .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.ping().await, Err(ClientError::Closed));

    // reconnect() starts again, and the subscription resumes.
    c.reconnect().await;
    c.connected().await.unwrap();
    let again = subscribed(&mut sub).await;
    assert!(again.was_recovering);
}
