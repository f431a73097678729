//! [`ServerFrame`]: every frame a server sends, tagged by `type`, as the
//! gateway encodes it and a client decodes it; and [`Peek`], the few header
//! fields a reader on a hot path looks at without building the rest.

use serde::{Deserialize, Serialize};

use super::push::{Disconnect, Event, Message, Resubscribed, Unsubscribed};

/// Any frame from server to client. The parameters are how a side holds
/// its parts: `S` strings, `Id` the echoed request id, `R` a reply's
/// `data`, `D` a publication's `data`, `C` a client in `join`/`leave`.
/// The gateway encodes borrowed strings and raw JSON; the Rust client
/// decodes owned strings and parsed values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<S, Id, R, D, C> {
    Authenticated {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        user_id: S,
        client_id: S,
    },
    Response {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        #[serde(default)]
        data: R,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        error: S,
        code: u16,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
    },
    Message(Message<S, D>),
    Join(Event<S, C>),
    Leave(Event<S, C>),
    Resubscribed(Resubscribed<S>),
    Disconnect(Disconnect<S>),
    Unsubscribed(Unsubscribed<S>),
    /// A frame type added to the protocol later: readers skip it.
    #[serde(other)]
    Unknown,
}

/// A server frame's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Authenticated,
    Response,
    Error,
    Pong,
    Message,
    Join,
    Leave,
    Resubscribed,
    Disconnect,
    Unsubscribed,
    #[serde(other)]
    Unknown,
}

/// The fields of a server frame a reader needs to route it, borrowed; the
/// rest is skipped by the parser without being built. `data` is read as
/// `D` (a publication's or a reply's), so a reader picks out only what it
/// needs of it.
#[derive(Debug, Deserialize)]
pub struct Peek<'a, D> {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(borrow)]
    pub channel: Option<&'a str>,
    pub id: Option<u64>,
    pub code: Option<u16>,
    pub data: Option<D>,
}

impl<'a, D: Deserialize<'a>> Peek<'a, D> {
    /// `None` if `text` is not a server frame whose `data` reads as `D`.
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::ClientInfo;

    type Decoded = ServerFrame<String, u64, Value, Value, ClientInfo<Value>>;

    fn decode(text: &str) -> Decoded {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn decodes_every_documented_frame() {
        let m = decode(
            r#"{"type":"message","channel":"c","from":"","data":{"t":1},"offset":3,"epoch":"e","timestamp":5}"#,
        );
        assert!(matches!(m, ServerFrame::Message(p) if p.offset == 3 && p.data["t"] == 1));
        let e = decode(r#"{"type":"error","id":7,"error":"permission denied","code":103}"#);
        assert!(matches!(
            e,
            ServerFrame::Error {
                id: Some(7),
                code: 103,
                ..
            }
        ));
        let j = decode(
            r#"{"type":"join","channel":"c","info":{"client_id":"x","user_id":"u","info":{"n":1}}}"#,
        );
        assert!(
            matches!(j, ServerFrame::Join(e) if e.info.info == Some(serde_json::json!({"n":1})))
        );
        assert_eq!(decode(r#"{"type":"novelty","x":1}"#), ServerFrame::Unknown);
        assert!(matches!(
            decode(r#"{"type":"response","id":1,"data":{}}"#),
            ServerFrame::Response { id: Some(1), .. }
        ));
        assert!(matches!(
            decode(r#"{"type":"resubscribed","channel":"c","offset":0,"epoch":"e","recovered":false}"#),
            ServerFrame::Resubscribed(r) if r.epoch == "e"
        ));
    }

    #[derive(Debug, Deserialize)]
    struct Seq {
        s: Option<u64>,
    }

    #[test]
    fn peeks_at_headers_only() {
        let p = Peek::<Seq>::parse(
            r#"{"type":"message","channel":"b:1","from":"","data":{"s":4,"x":[1]},"offset":1,"epoch":"e","timestamp":1}"#,
        )
        .unwrap();
        assert_eq!(
            (p.kind, p.channel, p.data.unwrap().s),
            (Kind::Message, Some("b:1"), Some(4))
        );
        let p = Peek::<Seq>::parse(r#"{"type":"error","error":"Rate limit exceeded","code":110}"#)
            .unwrap();
        assert_eq!((p.kind, p.code), (Kind::Error, Some(110)));
        let p = Peek::<Seq>::parse(r#"{"type":"brand_new"}"#).unwrap();
        assert_eq!(p.kind, Kind::Unknown);
    }
}
