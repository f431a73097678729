//! Replies to requests (`response`, `error`, `pong`, `authenticated`), each
//! echoing the request's `id`, and the `data` of each `response`.
//!
//! The `data` types are generic over how a side holds strings (`S`) and
//! publications (`P`): the gateway borrows what the broker answered and
//! embeds already-encoded publication frames ([`Publications`]); a client
//! decodes owned strings and parsed publications.

use serde::{Deserialize, Serialize, Serializer, ser::SerializeSeq};
use serde_json::value::RawValue;

use super::{ServerFrame, text};
use crate::Publication;

/// A reply as the server encodes it: borrowed strings, the raw request id.
type Out<'a, R> = ServerFrame<&'a str, &'a RawValue, R, (), ()>;

/// `{"type":"response","id"?,"data":{…}}`.
pub fn response<R: Serialize>(id: Option<&RawValue>, data: R) -> String {
    text(&Out::Response { id, data })
}

/// `{"type":"error","id"?,"error","code"}`.
pub fn error(id: Option<&RawValue>, error: &str, code: u16) -> String {
    text(&Out::<()>::Error { id, error, code })
}

/// `{"type":"pong","id"?}`.
pub fn pong(id: Option<&RawValue>) -> String {
    text(&Out::<()>::Pong { id })
}

/// `{"type":"authenticated","id"?,"user_id","client_id"}`.
pub fn authenticated(id: Option<&RawValue>, user_id: &str, client_id: &str) -> String {
    text(&Out::<()>::Authenticated {
        id,
        user_id,
        client_id,
    })
}

/// Already-encoded publication frames, embedded as a JSON array.
pub struct Publications<'a>(pub &'a [Publication]);

impl Serialize for Publications<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0 {
            let raw: &RawValue =
                serde_json::from_slice(&p.frame).map_err(serde::ser::Error::custom)?;
            seq.serialize_element(raw)?;
        }
        seq.end()
    }
}

/// `subscribe`: the channel's position when the subscription took effect;
/// with `since`, whether continuity was recovered and what was missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeData<S, P> {
    pub channel: S,
    pub offset: u64,
    pub epoch: S,
    #[serde(default)]
    pub recoverable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publications: Option<P>,
    /// Whether `join`/`leave` events are sent in this channel now; absent
    /// where the namespace has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<bool>,
}

/// `publish` with an `id`: the publication's position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishData<S> {
    pub offset: u64,
    pub epoch: S,
}

/// `history`: the channel's current position and the publications asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryData<S, P> {
    pub channel: S,
    /// The channel's current position.
    pub offset: u64,
    pub epoch: S,
    pub publications: P,
    /// With `since`: whether nothing after it was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// `presence`: a page of the clients subscribed, sorted by `client_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceData<S, C> {
    pub channel: S,
    pub clients: C,
    /// Where the next page starts (its request's `cursor`); absent on the
    /// last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<S>,
}

/// `presence_stats`: how many clients, and how many distinct users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsData<S> {
    pub channel: S,
    pub num_clients: u64,
    pub num_users: u64,
}

/// The `data` of replies that carry nothing (`unsubscribe`, `refresh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn encodes_replies() {
        let id = RawValue::from_string("42".into()).unwrap();
        assert_eq!(pong(Some(&id)), r#"{"type":"pong","id":42}"#);
        assert_eq!(pong(None), r#"{"type":"pong"}"#);
        assert_eq!(
            error(Some(&id), "Rate limit exceeded", 110),
            r#"{"type":"error","id":42,"error":"Rate limit exceeded","code":110}"#
        );
        assert_eq!(
            authenticated(None, "alice", "5e"),
            r#"{"type":"authenticated","user_id":"alice","client_id":"5e"}"#
        );
        let pubs = [Publication {
            offset: 1,
            frame: Bytes::from_static(br#"{"a":1}"#),
        }];
        assert_eq!(
            response(
                None,
                HistoryData {
                    channel: "c",
                    offset: 1,
                    epoch: "e",
                    publications: Publications(&pubs),
                    complete: None,
                }
            ),
            r#"{"type":"response","data":{"channel":"c","offset":1,"epoch":"e","publications":[{"a":1}]}}"#
        );
        assert_eq!(
            response(Some(&id), Empty {}),
            r#"{"type":"response","id":42,"data":{}}"#
        );
    }
}
