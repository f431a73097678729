//! The client with and without `switchboard.batch`, against a real
//! in-process server: bursts split into their messages, requests made
//! together written together and within the server's bound per frame.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT, token};
use futures_util::future::join_all;
use serde_json::json;
use switchboard_client::{Client, SubscriptionEvent};
use switchboard_testkit::client::Client as RawClient;

async fn messages(sub: &mut switchboard_client::Subscription, n: usize) -> Vec<serde_json::Value> {
    let mut got = Vec::new();
    while got.len() < n {
        match sub.next_within(WAIT).await {
            Some(SubscriptionEvent::Message(p)) => got.push(p.data),
            Some(_) => continue,
            None => panic!("{} of {n} messages within the wait", got.len()),
        }
    }
    got
}

#[tokio::test]
async fn a_burst_in_batched_frames_arrives_whole_and_in_order() {
    let server = TestServer::dev().await;
    for batch in [true, false] {
        // With a token: the reply to `auth` may share its frame.
        let c = Client::builder(server.url())
            .token(token("reader", Duration::from_secs(600)))
            .batch_frames(batch)
            .connect();
        c.connected().await.unwrap();
        let channel = format!("burst:rust{batch}");
        let mut sub = c.subscribe(&channel).await.unwrap();
        assert!(matches!(
            sub.next_within(WAIT).await,
            Some(SubscriptionEvent::Subscribed(_))
        ));
        let mut publisher =
            RawClient::connect_with_protocols(&server.url(), &["switchboard.batch"])
                .await
                .unwrap();
        let burst = (1..=50)
            .map(|n| json!({"type": "publish", "channel": channel, "data": {"n": n}}).to_string())
            .collect::<Vec<_>>()
            .join("\n");
        publisher.send_text(&burst).await.unwrap();
        let expected: Vec<_> = (1..=50).map(|n| json!({ "n": n })).collect();
        assert_eq!(messages(&mut sub, 50).await, expected, "batch {batch}");
        c.disconnect().await;
    }
}

#[tokio::test]
async fn requests_made_together_all_get_their_replies() {
    let server = TestServer::dev().await;
    for batch in [true, false] {
        let c = Client::builder(server.url()).batch_frames(batch).connect();
        c.connected().await.unwrap();
        let channel = format!("together:{batch}");
        // More than one batched frame may carry (100): the client splits
        // them, or the server would close the connection with 1008.
        let acks = join_all((0..250).map(|n| c.publish(&channel, json!(n)))).await;
        let mut offsets: Vec<u64> = acks.into_iter().map(|a| a.unwrap().offset).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (1..=250).collect::<Vec<_>>(), "batch {batch}");
        c.ping().await.unwrap();
        c.disconnect().await;
    }
}
