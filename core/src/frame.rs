//! Publications and presence events, encoded once into the client wire
//! format (docs/protocol.md). The owner encodes; every gateway and every
//! subscriber shares the same bytes.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{ChannelName, ClientInfo};

#[derive(Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    from: &'a str,
    data: &'a RawValue,
    offset: u64,
    epoch: &'a str,
    timestamp: u64,
}

#[derive(Serialize)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    info: &'a ClientInfo,
}

/// `{"type":"message",…}`: a publication as subscribers receive it.
pub fn publication(
    channel: &ChannelName,
    from: &str,
    data: &RawValue,
    offset: u64,
    epoch: &str,
    timestamp_ms: u64,
) -> Bytes {
    let frame = MessageFrame {
        kind: "message",
        channel: channel.as_str(),
        from,
        data,
        offset,
        epoch,
        timestamp: timestamp_ms,
    };
    encode(&frame)
}

#[derive(Serialize)]
struct ResubscribedFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    offset: u64,
    epoch: &'a str,
    recovered: bool,
}

/// `{"type":"resubscribed",…,"recovered":false}`: the server moved the
/// subscription to a channel whose state was lost; publications between the
/// client's last position and `offset` cannot be given.
pub fn resubscribed(channel: &ChannelName, offset: u64, epoch: &str) -> Bytes {
    encode(&ResubscribedFrame {
        kind: "resubscribed",
        channel: channel.as_str(),
        offset,
        epoch,
        recovered: false,
    })
}

/// `{"type":"join",…}` or `{"type":"leave",…}`.
pub fn presence_event(kind: PresenceEvent, channel: &ChannelName, info: &ClientInfo) -> Bytes {
    let kind = match kind {
        PresenceEvent::Join => "join",
        PresenceEvent::Leave => "leave",
    };
    encode(&EventFrame {
        kind,
        channel: channel.as_str(),
        info,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    Join,
    Leave,
}

fn encode<T: Serialize>(frame: &T) -> Bytes {
    // Serializing plain structs of strings, numbers and already-valid raw
    // JSON into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(frame).expect("frame serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_shape() {
        let ch = ChannelName::new("chat:a").unwrap();
        let data = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        let b = publication(&ch, "alice", &data, 7, "ep", 1000);
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"type":"message","channel":"chat:a","from":"alice","data":{"text":"hi"},"offset":7,"epoch":"ep","timestamp":1000}"#
        );
    }
}
