//! The bytes the load tool sends and reads: `publish` frames whose `data`
//! carries the channel's sequence number and the send time, padded to the
//! planned size, and the few fields of server frames it needs.
//!
//! Reading is the tool's hot path (every delivery lands here), so server
//! frames are parsed into borrowed fields only; everything else in them is
//! skipped by the parser without being built.

use serde::Deserialize;

/// Smallest `data` the tool can fill: the sequence number and timestamp
/// take up to about this much.
pub const MIN_PAYLOAD: usize = 48;

/// A `publish` frame without `id`: fire and forget, so the server spends
/// nothing on a reply and the publisher waits for nothing.
pub fn publish_frame(channel: &str, seq: u64, sent_micros: u64, payload: usize) -> String {
    let head = format!(r#"{{"s":{seq},"t":{sent_micros},"p":""#);
    let pad = payload.saturating_sub(head.len() + 2);
    let mut frame = String::with_capacity(payload + channel.len() + 48);
    frame.push_str(r#"{"type":"publish","channel":""#);
    frame.push_str(channel);
    frame.push_str(r#"","data":"#);
    frame.push_str(&head);
    frame.extend(std::iter::repeat_n('x', pad));
    frame.push_str(r#""}}"#);
    frame
}

/// What the tool reads from a server frame.
#[derive(Debug, Deserialize)]
pub struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    #[serde(borrow, default)]
    pub channel: Option<&'a str>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub data: Option<Stamp>,
}

/// The sequence number and send time in a publication's `data`; absent
/// in the `data` of replies.
#[derive(Debug, Default, Deserialize)]
pub struct Stamp {
    #[serde(default)]
    pub s: Option<u64>,
    #[serde(default)]
    pub t: Option<u64>,
}

impl<'a> ServerFrame<'a> {
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// `(channel, seq, sent_micros)` of a publication the tool sent.
    pub fn publication(&self) -> Option<(&'a str, u64, u64)> {
        if self.kind != "message" {
            return None;
        }
        let stamp = self.data.as_ref()?;
        Some((self.channel?, stamp.s?, stamp.t?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_planned_size_and_reads_back() {
        let frame = publish_frame("bench:7", 42, 1_234_567, 100);
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
        assert_eq!(f.publication(), Some(("bench:7", 42, 1_234_567)));
    }

    #[test]
    fn replies_and_events_are_not_publications() {
        let reply = r#"{"type":"response","id":3,"data":{"channel":"bench:1","offset":0,"epoch":"e","recoverable":true}}"#;
        let f = ServerFrame::parse(reply).unwrap();
        assert_eq!((f.kind, f.id), ("response", Some(3)));
        assert_eq!(f.publication(), None);
        let join = r#"{"type":"join","channel":"bench:1","info":{"client_id":"a","user_id":""}}"#;
        assert_eq!(ServerFrame::parse(join).unwrap().publication(), None);
        let err = r#"{"type":"error","error":"Rate limit exceeded","code":110}"#;
        assert_eq!(ServerFrame::parse(err).unwrap().code, Some(110));
    }
}
