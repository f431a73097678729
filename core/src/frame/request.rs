//! What clients send: [`RequestFrame`], a request as a client encodes it,
//! and [`Request`], a request frame the server parsed and validated
//! ([`super::parse`]).

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{ChannelName, Position};

/// A request as a client writes it, tagged by `type`; `D` is the
/// publication's `data`. The `id` (any number or string, echoed in the
/// reply) is set apart: clients number their requests when they send them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestFrame<'a, D> {
    Auth {
        token: &'a str,
    },
    Refresh {
        token: &'a str,
    },
    Subscribe {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<&'a Position>,
    },
    Unsubscribe {
        channel: &'a str,
    },
    /// Without an id, fire and forget: no reply on success.
    Publish {
        channel: &'a str,
        data: D,
    },
    /// One page of presence: after `cursor` (the last page's
    /// `next_cursor`), at most `limit` clients.
    Presence {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    PresenceStats {
        channel: &'a str,
    },
    History {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        reverse: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<&'a Position>,
    },
    Ping,
}

/// A request frame with its `id`, as it goes on the wire.
#[derive(Serialize)]
struct WithId<'r, 'a, Id, D> {
    id: Id,
    #[serde(flatten)]
    request: &'r RequestFrame<'a, D>,
}

impl<D: Serialize> RequestFrame<'_, D> {
    /// The frame without `id`.
    pub fn encode(&self) -> String {
        super::text(self)
    }

    /// The frame with `id`.
    pub fn encode_with_id<Id: Serialize>(&self, id: Id) -> String {
        super::text(&WithId { id, request: self })
    }
}

/// A request from a client, validated by [`super::parse::parse`].
#[derive(Debug)]
pub enum Request<'a> {
    Auth {
        token: String,
    },
    Refresh {
        token: String,
    },
    Subscribe {
        channel: ChannelName,
        since: Option<Position>,
    },
    Unsubscribe {
        channel: ChannelName,
    },
    Publish {
        channel: ChannelName,
        data: &'a RawValue,
    },
    Presence {
        channel: ChannelName,
        cursor: Option<String>,
        limit: Option<usize>,
    },
    PresenceStats {
        channel: ChannelName,
    },
    History {
        channel: ChannelName,
        since: Option<Position>,
        limit: Option<usize>,
        reverse: bool,
    },
    Ping,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse::parse;

    type NoData<'a> = RequestFrame<'a, ()>;

    #[test]
    fn what_clients_encode_the_server_parses() {
        let since = Position {
            offset: 3,
            epoch: "e".into(),
        };
        let frame = NoData::Subscribe {
            channel: "chat:a",
            since: Some(&since),
        }
        .encode_with_id(7);
        assert_eq!(
            frame,
            r#"{"id":7,"type":"subscribe","channel":"chat:a","since":{"offset":3,"epoch":"e"}}"#
        );
        let parsed = parse(&frame).unwrap();
        assert_eq!(parsed.id.unwrap().get(), "7");
        assert!(matches!(parsed.request, Request::Subscribe { since: Some(p), .. } if p == since));

        let data = RawValue::from_string(r#"{"s":1}"#.into()).unwrap();
        let publish = RequestFrame::Publish {
            channel: "c",
            data: &*data,
        }
        .encode();
        assert_eq!(
            publish,
            r#"{"type":"publish","channel":"c","data":{"s":1}}"#
        );
        assert!(matches!(
            parse(&publish).unwrap().request,
            Request::Publish { .. }
        ));

        let history = NoData::History {
            channel: "c",
            limit: Some(2),
            reverse: false,
            since: None,
        }
        .encode();
        assert_eq!(history, r#"{"type":"history","channel":"c","limit":2}"#);
        assert_eq!(NoData::Ping.encode(), r#"{"type":"ping"}"#);
    }
}
