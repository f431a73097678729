//! The bytes the load tool sends and reads: `publish` frames whose `data`
//! carries the channel's sequence number and the send time, padded to the
//! planned size, and the few fields of server frames it needs.
//!
//! Reading is the tool's hot path (every delivery lands here), so server
//! frames are parsed into borrowed fields only; everything else in them is
//! skipped by the parser without being built.

use serde::{Deserialize, Serialize};
use switchboard_core::frame::{Kind, Peek, RequestFrame};

/// Smallest `data` the tool can fill: the sequence number and timestamp
/// take up to about this much.
pub const MIN_PAYLOAD: usize = 48;

/// What the tool publishes as `data`: `{"s":seq,"t":sent_micros,"p":"xx…"}`.
#[derive(Serialize)]
struct Stamped<'a> {
    s: u64,
    t: u64,
    p: &'a str,
}

/// A `publish` frame without `id`: fire and forget, so the server spends
/// nothing on a reply and the publisher waits for nothing.
pub fn publish_frame(channel: &str, seq: u64, sent_micros: u64, payload: usize) -> String {
    // `{"s":…,"t":…,"p":"` and `"}` around the padding.
    let head = format!(r#"{{"s":{seq},"t":{sent_micros},"p":""#).len() + 2;
    let pad = "x".repeat(payload.saturating_sub(head));
    let data = Stamped {
        s: seq,
        t: sent_micros,
        p: &pad,
    };
    RequestFrame::Publish { channel, data }.encode()
}

/// A `subscribe` request with `id`.
pub fn subscribe_frame(channel: &str, id: usize) -> String {
    let frame: RequestFrame<'_, ()> = RequestFrame::Subscribe {
        channel,
        since: None,
    };
    frame.encode_with_id(id)
}

/// What the tool reads of a server frame.
pub type ServerFrame<'a> = Peek<'a, Stamp>;

/// The sequence number and send time in a publication's `data`; absent
/// in the `data` of replies.
#[derive(Debug, Default, Deserialize)]
pub struct Stamp {
    #[serde(default)]
    pub s: Option<u64>,
    #[serde(default)]
    pub t: Option<u64>,
}

/// `(channel, seq, sent_micros)` of a publication the tool sent.
pub fn publication<'a>(frame: &ServerFrame<'a>) -> Option<(&'a str, u64, u64)> {
    if frame.kind != Kind::Message {
        return None;
    }
    let stamp = frame.data.as_ref()?;
    Some((frame.channel?, stamp.s?, stamp.t?))
}

/// The messages of one server frame: the frame, or under
/// `switchboard.batch` each of its lines.
pub fn messages(text: &str, batch: bool) -> impl Iterator<Item = &str> {
    let whole = (!batch).then_some(text);
    let lines = batch.then(|| text.split('\n')).into_iter().flatten();
    whole.into_iter().chain(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_planned_size_and_reads_back() {
        let frame = publish_frame("bench:7", 42, 1_234_567, 100);
        assert!(frame.starts_with(
            r#"{"type":"publish","channel":"bench:7","data":{"s":42,"t":1234567,"p":"xx"#
        ));
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "publish");
        assert_eq!(v.get("id"), None);
        assert_eq!(serde_json::to_string(&v["data"]).unwrap().len(), 100);

        // As subscribers get it back from the server.
        let delivered = format!(
            r#"{{"type":"message","channel":"bench:7","from":"","data":{},"offset":42,"epoch":"e","timestamp":1}}"#,
            serde_json::to_string(&v["data"]).unwrap()
        );
        let f = ServerFrame::parse(&delivered).unwrap();
        assert_eq!(publication(&f), Some(("bench:7", 42, 1_234_567)));
    }

    #[test]
    fn replies_and_events_are_not_publications() {
        let reply = r#"{"type":"response","id":3,"data":{"channel":"bench:1","offset":0,"epoch":"e","recoverable":true}}"#;
        let f = ServerFrame::parse(reply).unwrap();
        assert_eq!((f.kind, f.id), (Kind::Response, Some(3)));
        assert_eq!(publication(&f), None);
        let join = r#"{"type":"join","channel":"bench:1","info":{"client_id":"a","user_id":""}}"#;
        assert_eq!(publication(&ServerFrame::parse(join).unwrap()), None);
        assert_eq!(
            subscribe_frame("bench:1", 3),
            r#"{"id":3,"type":"subscribe","channel":"bench:1"}"#
        );
        let err = r#"{"type":"error","error":"Rate limit exceeded","code":110}"#;
        assert_eq!(ServerFrame::parse(err).unwrap().code, Some(110));
    }
}
