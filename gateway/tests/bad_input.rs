//! Bad input gets a documented error or close code, and never costs
//! anyone else a message.

mod common;

use common::{Client, TestServer};
use serde_json::json;
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};

/// A subscriber that must see every marker, in order, whatever others do.
struct Bystander {
    client: Client,
    publisher: Client,
    markers: u64,
}

impl Bystander {
    async fn new(server: &TestServer) -> Self {
        let mut client = server.client().await;
        client.subscribe("watch:all").await.unwrap();
        Self {
            client,
            publisher: server.client().await,
            markers: 0,
        }
    }

    async fn still_served(&mut self) {
        self.markers += 1;
        self.publisher
            .publish("watch:all", json!({"marker": self.markers}))
            .await
            .unwrap();
        let m = self.client.message("watch:all").await.unwrap();
        assert_eq!(m["data"]["marker"], self.markers);
    }
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays() {
    let server = TestServer::dev().await;
    let mut bystander = Bystander::new(&server).await;
    let mut c = server.client().await;
    let deep_data = format!(
        r#"{{"type":"publish","channel":"x","data":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_other = format!(
        r#"{{"type":"ping","extra":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases: Vec<(String, u64, &str)> = vec![
        ("{".into(), 107, "malformed JSON"),
        ("".into(), 107, "malformed JSON"),
        ("[1,2]".into(), 107, "invalid frame"),
        ("42".into(), 107, "invalid frame"),
        ("{}".into(), 107, "missing field `type`"),
        (
            r#"{"type":"dance"}"#.into(),
            104,
            "unknown message type \"dance\"",
        ),
        (r#"{"type":7}"#.into(), 107, "invalid frame"),
        (
            r#"{"type":"subscribe"}"#.into(),
            107,
            "missing field `channel`",
        ),
        (
            r#"{"type":"publish","channel":"x"}"#.into(),
            107,
            "missing field `data`",
        ),
        (
            r#"{"type":"history","channel":"x","limit":"ten"}"#.into(),
            107,
            "invalid frame",
        ),
        (
            r#"{"type":"subscribe","channel":"no spaces"}"#.into(),
            113,
            "invalid channel name",
        ),
        (
            r#"{"type":"subscribe","channel":"ctl\u0001"}"#.into(),
            113,
            "invalid channel name",
        ),
        (
            format!(r#"{{"type":"subscribe","channel":"{}"}}"#, "a".repeat(300)),
            113,
            "longer than 255",
        ),
        (
            r#"{"type":"ping","id":{"nested":true}}"#.into(),
            107,
            "id must be a number or a string",
        ),
        (
            r#"{"type":"subscribe","channel":"x","since":{"offset":-1,"epoch":"e"}}"#.into(),
            107,
            "invalid frame",
        ),
        (deep_data, 107, "nests deeper than 64"),
    ];
    for (frame, code, text) in cases {
        c.send_text(&frame).await.unwrap();
        let err = c.next().await.unwrap();
        assert_eq!(err["type"], "error", "{frame:.80}: {err}");
        assert_eq!(err["code"], code, "{frame:.80}: {err}");
        assert!(
            err["error"].as_str().unwrap().contains(text),
            "{frame:.80}: {err} lacks {text}"
        );
        bystander.still_served().await;
    }
    // Unknown fields are ignored, however deep: they are skipped without
    // recursion and never stored or forwarded.
    c.send_text(&deep_other).await.unwrap();
    assert_eq!(c.next().await.unwrap()["type"], "pong");
    bystander.still_served().await;
    // The id is echoed when the frame is otherwise unusable but has one.
    c.send_text(r#"{"type":"dance","id":"d1"}"#).await.unwrap();
    assert_eq!(c.next().await.unwrap()["id"], "d1");
    c.send_text(r#"{"type":"history","id":5,"channel":"x","limit":"ten"}"#)
        .await
        .unwrap();
    assert_eq!(c.next().await.unwrap()["id"], 5);
    assert_eq!(
        c.request(json!({"type": "ping"})).await.unwrap()["type"],
        "pong"
    );
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let server = TestServer::dev().await;
    let mut bystander = Bystander::new(&server).await;
    let mut c = server.client().await;
    c.send_message(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    let closed = c.closed().await.unwrap();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(1003), "binary frames are not supported")
    );
    assert_eq!(closed.disconnect().unwrap()["reconnect"], false);
    bystander.still_served().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = TestServer::dev().await;
    let mut bystander = Bystander::new(&server).await;
    let mut c = server.client().await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    c.send_message(Message::Frame(frame)).await.unwrap();
    let closed = c.closed().await.unwrap();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(1007), "invalid UTF-8")
    );
    bystander.still_served().await;
}

#[tokio::test]
async fn plain_http_on_the_websocket_path_gets_a_status_and_a_message() {
    let server = TestServer::dev().await;
    let (status, body) = common::http::get(server.addr, "/ws").await.unwrap();
    assert_eq!(status, 426);
    assert!(body.contains("speaks WebSocket"), "{body}");
    let (status, _) = common::http::get(server.addr, "/nope").await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn poison_data_is_refused_and_history_stays_readable() {
    let server = TestServer::dev().await;
    let mut bystander = Bystander::new(&server).await;
    let mut c = server.client().await;
    // Each of these is JSON that lenient parsers accept and strict ones
    // (serde_json, Python's int limit, UTF-16 decoders) fail on; published
    // into the bystander's own channel, one would break its history.
    let long_integer = "7".repeat(60_000);
    let cases: Vec<(String, &str)> = vec![
        ("1e999999".into(), "beyond the range of a 64-bit float"),
        (
            r#"{"n":-1e309}"#.into(),
            "beyond the range of a 64-bit float",
        ),
        (long_integer, "longer than 100 characters"),
        (r#""\ud800""#.into(), "lone UTF-16 surrogate"),
        (r#"["ok","\udc00\ud800"]"#.into(), "lone UTF-16 surrogate"),
        (r#""\ud83d\u0041""#.into(), "lone UTF-16 surrogate"),
    ];
    for (data, text) in cases {
        let frame = format!(r#"{{"type":"publish","id":9,"channel":"watch:all","data":{data}}}"#);
        c.send_text(&frame).await.unwrap();
        let err = c.next().await.unwrap();
        assert_eq!(err["type"], "error", "{frame:.80}: {err}");
        assert_eq!(err["code"], 107, "{frame:.80}: {err}");
        assert_eq!(err["id"], 9, "{frame:.80}: {err}");
        assert!(
            err["error"].as_str().unwrap().contains(text),
            "{frame:.80}: {err} lacks {text}"
        );
        bystander.still_served().await;
    }
    // What strict parsers read is still accepted: paired surrogates, long
    // but finite numbers, tiny exponents.
    let fine = r#"{"e":"\ud83d\ude00","n":1.7976931348623157e308,"z":1e-400}"#;
    let frame = format!(r#"{{"type":"publish","id":10,"channel":"watch:all","data":{fine}}}"#);
    c.send_text(&frame).await.unwrap();
    assert_eq!(c.next().await.unwrap()["type"], "response");
    let m = bystander.client.message("watch:all").await.unwrap();
    assert_eq!(m["data"]["e"], "😀");
    bystander.still_served().await;
    // History holds only what was accepted; the test client's strict parse
    // of the reply (serde_json) is what poison would have broken.
    let history = c
        .request(json!({"type": "history", "channel": "watch:all", "limit": 100}))
        .await
        .unwrap();
    let pubs = history["data"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len() as u64, bystander.markers + 1, "{history}");
}
