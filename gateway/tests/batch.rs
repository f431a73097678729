//! Batched frames (`switchboard.batch`, docs/protocol.md): real WebSocket
//! clients over real sockets, reading the frames as they come.

mod common;

use common::{Client, ForTest, Settings, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BATCH: &str = "switchboard.batch";

async fn batch_client(server: &TestServer) -> Client {
    let c = Client::connect_with_protocols(&server.url(), &[BATCH, "switchboard"])
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some(BATCH));
    c
}

/// The next text frame, as it came.
async fn frame(c: &mut Client) -> String {
    loop {
        let msg = tokio::time::timeout(common::WAIT, c.ws().next())
            .await
            .expect("a frame within the wait")
            .expect("the connection is open")
            .expect("a valid frame");
        match msg {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        }
    }
}

/// Each line of a frame as JSON.
fn lines(frame: &str) -> Vec<Value> {
    frame
        .split('\n')
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

/// Reads frames until `count` messages whose `type` is `kind` came;
/// returns them and how many frames carried them.
async fn collect(c: &mut Client, kind: &str, count: usize) -> (Vec<Value>, usize) {
    let mut found = Vec::new();
    let mut frames = 0;
    while found.len() < count {
        let f = frame(c).await;
        let before = found.len();
        found.extend(lines(&f).into_iter().filter(|m| m["type"] == kind));
        if found.len() > before {
            frames += 1;
        }
    }
    (found, frames)
}

fn publishes(channel: &str, n: u64, with_id: bool) -> String {
    (1..=n)
        .map(|i| {
            let mut p = json!({"type": "publish", "channel": channel, "data": {"n": i}});
            if with_id {
                p["id"] = json!(i);
            }
            p.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn plain_clients_get_one_message_per_frame_as_before() {
    let server = TestServer::dev().await;
    let mut bare = server.client().await;
    let mut named = Client::connect_with_protocols(&server.url(), &["switchboard"])
        .await
        .unwrap();
    assert_eq!(named.protocol.as_deref(), Some("switchboard"));
    assert_eq!(bare.protocol, None);
    for c in [&mut bare, &mut named] {
        c.subscribe("burst:plain").await.unwrap();
    }
    let mut publisher = batch_client(&server).await;
    publisher
        .send_text(&publishes("burst:plain", 40, false))
        .await
        .unwrap();
    for c in [&mut bare, &mut named] {
        let mut seen = 0;
        while seen < 40 {
            // Every frame parses as exactly one JSON object.
            let f = frame(c).await;
            let m: Value = serde_json::from_str(&f).unwrap_or_else(|e| panic!("{e}: {f}"));
            if m["type"] == "message" {
                seen += 1;
                assert_eq!(m["data"]["n"], seen);
            }
        }
    }
    // Two requests in one plain frame are one malformed request, as before.
    let two = "{\"type\":\"ping\",\"id\":1}\n{\"type\":\"ping\",\"id\":2}";
    bare.send_text(two).await.unwrap();
    let reply = bare.wait_for(|f| f["type"] == "error").await.unwrap();
    assert_eq!(reply["code"], 107, "{reply}");
}

#[tokio::test]
async fn a_batch_client_gets_a_burst_in_few_frames() {
    let server = TestServer::dev().await;
    let mut watcher = batch_client(&server).await;
    watcher
        .send_text(&json!({"type": "subscribe", "id": "w", "channel": "burst:a"}).to_string())
        .await
        .unwrap();
    let (replies, _) = collect(&mut watcher, "response", 1).await;
    assert_eq!(replies[0]["id"], "w");

    // The publisher is subscribed too: its own publications queue up while
    // it handles the frame, and go out together right behind the replies.
    let mut publisher = batch_client(&server).await;
    publisher
        .send_text(&json!({"type": "subscribe", "id": 0, "channel": "burst:a"}).to_string())
        .await
        .unwrap();
    collect(&mut publisher, "response", 1).await;
    collect(&mut publisher, "join", 1).await;
    publisher
        .send_text(&publishes("burst:a", 50, true))
        .await
        .unwrap();
    let replies = lines(&frame(&mut publisher).await);
    let ids: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=50).collect::<Vec<_>>(),
        "one frame with every reply, in order"
    );
    assert!(replies.iter().all(|r| r["type"] == "response"));
    let (own, frames) = collect(&mut publisher, "message", 50).await;
    assert_eq!(frames, 1, "the publisher's 50 deliveries came in one frame");
    let (seen, frames) = collect(&mut watcher, "message", 50).await;
    assert!(frames < 50, "50 deliveries in {frames} frames");
    for messages in [own, seen] {
        let ns: Vec<u64> = messages
            .iter()
            .map(|m| m["data"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (1..=50).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn each_request_of_a_frame_is_answered_as_if_sent_alone() {
    let server = TestServer::dev().await;
    let mut c = batch_client(&server).await;
    let frame_text = [
        json!({"type": "subscribe", "id": 1, "channel": "multi:a"}).to_string(),
        json!({"type": "subscribe", "id": 2, "channel": "multi:a"}).to_string(),
        "{not json".to_owned(),
        json!({"type": "nope", "id": 4}).to_string(),
        json!({"type": "publish", "id": 5, "channel": "multi:a", "data": "hi"}).to_string(),
        String::new(),
        json!({"type": "ping", "id": "six"}).to_string(),
        json!({"type": "subscribe", "id": 7, "channel": "bad channel"}).to_string(),
    ]
    .join("\n");
    c.send_text(&frame_text).await.unwrap();
    let mut received = Vec::new();
    while received
        .iter()
        .filter(|m: &&Value| m["type"] != "join")
        .count()
        < 8
    {
        received.extend(lines(&frame(&mut c).await));
    }
    let published = received
        .iter()
        .position(|m| m["type"] == "message")
        .unwrap();
    assert_eq!(received[published]["data"], "hi");
    let replies: Vec<&Value> = received
        .iter()
        .filter(|m| m["type"] != "join" && m["type"] != "message")
        .collect();
    let summary: Vec<(Value, Value, Value)> = replies
        .iter()
        .map(|r| (r["type"].clone(), r["id"].clone(), r["code"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("response"), json!(1), Value::Null),
            (json!("error"), json!(2), json!(105)),
            (json!("error"), Value::Null, json!(107)),
            (json!("error"), json!(4), json!(104)),
            (json!("response"), json!(5), Value::Null),
            (json!("pong"), json!("six"), Value::Null),
            (json!("error"), json!(7), json!(113)),
        ]
    );
    // The publication itself follows its reply, and the connection goes on.
    let replied = received.iter().position(|m| m["id"] == 5).unwrap();
    assert!(published > replied);
    assert_eq!(
        c.request(json!({"type": "ping"})).await.unwrap()["type"],
        "pong"
    );
}

#[tokio::test]
async fn more_than_a_hundred_requests_in_a_frame_close_the_connection() {
    let server = TestServer::dev().await;
    let mut c = batch_client(&server).await;
    let pings = |n: u64| {
        (1..=n)
            .map(|i| json!({"type": "ping", "id": i}).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    c.send_text(&pings(100)).await.unwrap();
    let (pongs, _) = collect(&mut c, "pong", 100).await;
    assert_eq!(pongs.last().unwrap()["id"], 100);

    c.send_text(&pings(101)).await.unwrap();
    let closed = c.closed().await.unwrap();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(1008), "too many requests in one frame")
    );
    assert!(
        closed.frames.iter().all(|f| f["type"] != "pong"),
        "none of the 101 was handled"
    );
    let disconnect = closed.disconnect().expect("a disconnect frame");
    assert_eq!(
        (
            disconnect["code"].as_u64(),
            disconnect["reconnect"].as_bool()
        ),
        (Some(1008), Some(false))
    );
}

#[tokio::test]
async fn batch_frames_stay_within_the_frame_size_limit() {
    let mut s = Settings::for_test();
    s.gateway.limits.max_message_bytes = 2048;
    let server = TestServer::start(s).await;
    let mut c = batch_client(&server).await;
    c.send_text(&json!({"type": "subscribe", "id": 0, "channel": "size:a"}).to_string())
        .await
        .unwrap();
    collect(&mut c, "response", 1).await;
    // 60 publications of about 700 bytes each, three per request frame:
    // three of them ready at once exceed the limit as one frame.
    let mut publisher = batch_client(&server).await;
    for k in 0..20 {
        let three = (1..=3)
            .map(|i| {
                let n = 3 * k + i;
                json!({"type": "publish", "channel": "size:a", "data": {"n": n, "pad": "x".repeat(580)}})
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        publisher.ws().feed(Message::text(three)).await.unwrap();
    }
    publisher.ws().flush().await.unwrap();
    let mut ns = Vec::new();
    let mut several = false;
    while ns.len() < 60 {
        let f = frame(&mut c).await;
        assert!(f.len() <= 2048, "a frame of {} bytes", f.len());
        let messages: Vec<Value> = lines(&f)
            .into_iter()
            .filter(|m| m["type"] == "message")
            .collect();
        several |= messages.len() > 1;
        ns.extend(messages.iter().map(|m| m["data"]["n"].as_u64().unwrap()));
    }
    assert_eq!(ns, (1..=60).collect::<Vec<_>>());
    assert!(several, "some frame carried several messages");
}

#[tokio::test]
async fn line_breaks_in_published_data_do_not_split_a_message() {
    let server = TestServer::dev().await;
    let mut c = batch_client(&server).await;
    c.send_text(&json!({"type": "subscribe", "id": 0, "channel": "lines:a"}).to_string())
        .await
        .unwrap();
    collect(&mut c, "response", 1).await;
    // A plain client may send pretty-printed JSON; its data keeps its text.
    let mut plain = server.client().await;
    plain
        .send_text("{\"type\":\"publish\",\"id\":1,\"channel\":\"lines:a\",\n \"data\": {\n  \"text\": \"a\\nb\"\n }\n}")
        .await
        .unwrap();
    let (messages, _) = collect(&mut c, "message", 1).await;
    assert_eq!(messages[0]["data"], json!({"text": "a\nb"}));
}
