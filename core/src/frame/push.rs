//! Frames the server sends without being asked: publications, presence
//! events, moved and ended subscriptions, and the `disconnect` notice.
//!
//! Publications and presence events are encoded once, by the channel's
//! owner, into [`Bytes`] every gateway and every subscriber shares; so is a
//! `resubscribed` notice, shared by a gateway's subscribers of the channel.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ServerFrame, shared, text};
use crate::{ChannelName, ClientInfo, Position};

/// `{"type":"message",…}`: a publication as subscribers receive it, and as
/// subscribe and history replies carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message<S, D> {
    pub channel: S,
    /// The publisher's user id; `""` for anonymous publishers.
    pub from: S,
    pub data: D,
    pub offset: u64,
    pub epoch: S,
    /// When the server accepted it, in ms since the Unix epoch.
    pub timestamp: u64,
}

impl<D> Message<String, D> {
    /// Where this publication stands in its channel.
    pub fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

/// `{"type":"join"|"leave","channel","info":{client}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<S, C> {
    pub channel: S,
    pub info: C,
}

/// `{"type":"resubscribed",…,"recovered":false}`: the server moved the
/// subscription to a channel whose state was lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resubscribed<S> {
    pub channel: S,
    pub offset: u64,
    pub epoch: S,
    pub recovered: bool,
}

/// `{"type":"disconnect",…}`, just before the server closes the connection
/// with the same code and reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disconnect<S> {
    pub code: u16,
    pub reason: S,
    pub reconnect: bool,
}

/// `{"type":"unsubscribed","channel"}`: the server ended a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsubscribed<S> {
    pub channel: S,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// A push as the server encodes it: borrowed strings, raw `data`.
type Out<'a, C> = ServerFrame<&'a str, (), (), &'a RawValue, C>;

/// `{"type":"message",…}`: a publication as subscribers receive it.
pub fn publication(
    channel: &ChannelName,
    from: &str,
    data: &RawValue,
    offset: u64,
    epoch: &str,
    timestamp_ms: u64,
) -> Bytes {
    shared(&Out::<()>::Message(Message {
        channel: channel.as_str(),
        from,
        data,
        offset,
        epoch,
        timestamp: timestamp_ms,
    }))
}

/// `{"type":"resubscribed",…,"recovered":false}`: publications between the
/// client's last position and `offset` cannot be given.
pub fn resubscribed(channel: &ChannelName, offset: u64, epoch: &str) -> Bytes {
    shared(&Out::<()>::Resubscribed(Resubscribed {
        channel: channel.as_str(),
        offset,
        epoch,
        recovered: false,
    }))
}

/// `{"type":"join",…}` or `{"type":"leave",…}`.
pub fn presence_event(kind: PresenceEvent, channel: &ChannelName, info: &ClientInfo) -> Bytes {
    let event = Event {
        channel: channel.as_str(),
        info,
    };
    shared(&match kind {
        PresenceEvent::Join => Out::Join(event),
        PresenceEvent::Leave => Out::Leave(event),
    })
}

/// `{"type":"unsubscribed","channel"}`.
pub fn unsubscribed(channel: &ChannelName) -> String {
    text(&Out::<()>::Unsubscribed(Unsubscribed {
        channel: channel.as_str(),
    }))
}

/// `{"type":"disconnect","code","reason","reconnect"}`.
pub fn disconnect(code: u16, reason: &str, reconnect: bool) -> String {
    text(&Out::<()>::Disconnect(Disconnect {
        code,
        reason,
        reconnect,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_keep_their_documented_bytes() {
        let ch = ChannelName::new("chat:a").unwrap();
        let data = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        let b = publication(&ch, "alice", &data, 7, "ep", 1000);
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"type":"message","channel":"chat:a","from":"alice","data":{"text":"hi"},"offset":7,"epoch":"ep","timestamp":1000}"#
        );
        assert_eq!(
            &resubscribed(&ch, 0, "Qm")[..],
            br#"{"type":"resubscribed","channel":"chat:a","offset":0,"epoch":"Qm","recovered":false}"#
        );
        let info = ClientInfo {
            client_id: "5e".into(),
            user_id: "alice".into(),
            info: Some(RawValue::from_string(r#"{"name":"A"}"#.into()).unwrap()),
        };
        assert_eq!(
            &presence_event(PresenceEvent::Join, &ch, &info)[..],
            br#"{"type":"join","channel":"chat:a","info":{"client_id":"5e","user_id":"alice","info":{"name":"A"}}}"#
        );
        let info = ClientInfo { info: None, ..info };
        assert_eq!(
            &presence_event(PresenceEvent::Leave, &ch, &info)[..],
            br#"{"type":"leave","channel":"chat:a","info":{"client_id":"5e","user_id":"alice"}}"#
        );
        assert_eq!(
            unsubscribed(&ch),
            r#"{"type":"unsubscribed","channel":"chat:a"}"#
        );
        assert_eq!(
            disconnect(1001, "server shutting down", true),
            r#"{"type":"disconnect","code":1001,"reason":"server shutting down","reconnect":true}"#
        );
    }
}
