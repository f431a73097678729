//! The client wire protocol (docs/protocol.md): parsing what clients send
//! and encoding what the server sends. Sans-IO: text in, values out.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer, ser::SerializeSeq};
use serde_json::value::RawValue;
use switchboard_core::{ChannelName, ClientInfo, Position, Publication};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::error::{Disconnect, RequestError};

/// A request from a client, validated.
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

/// A parsed frame: the request and the `id` to echo, if any.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub id: Option<&'a RawValue>,
    pub request: Request<'a>,
}

/// A frame that could not be turned into a request; `id` is echoed when it
/// could still be read.
#[derive(Debug)]
pub struct Rejected<'a> {
    pub id: Option<&'a RawValue>,
    pub error: RequestError,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    // `null` is data too: only an absent field is "missing".
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    token: Option<String>,
    since: Option<Position>,
    limit: Option<usize>,
    reverse: Option<bool>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Fallback for frames that do not parse: recovers only the `id`.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// Deepest nesting of arrays and objects accepted in `data`. Subscribers'
/// JSON parsers (browsers, mobile SDKs) have recursion limits of their
/// own; one publisher must not be able to crash them all.
pub const MAX_DATA_DEPTH: usize = 64;

/// Whether `raw` (valid JSON) nests deeper than `max`. A byte scan: no
/// recursion, so any depth is safe to check.
pub fn nests_deeper_than(raw: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in raw.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Incoming<'_>, Rejected<'_>> {
    let env: Envelope<'_> = match serde_json::from_str(text) {
        Ok(env) => env,
        Err(e) => {
            let id = serde_json::from_str::<IdOnly<'_>>(text)
                .ok()
                .and_then(|i| i.id)
                .filter(|id| valid_id(id));
            let why = if e.is_syntax() || e.is_eof() {
                format!("malformed JSON: {e}")
            } else {
                format!("invalid frame: {e}")
            };
            return Err(Rejected {
                id,
                error: RequestError::BadRequest(why),
            });
        }
    };
    let id = env.id;
    if let Some(id) = id
        && !valid_id(id)
    {
        return Err(Rejected {
            id: None,
            error: RequestError::BadRequest("id must be a number or a string".into()),
        });
    }
    request(env)
        .map(|request| Incoming { id, request })
        .map_err(|error| Rejected { id, error })
}

fn valid_id(id: &RawValue) -> bool {
    matches!(id.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'))
}

fn request(env: Envelope<'_>) -> Result<Request<'_>, RequestError> {
    let kind = env.kind.ok_or_else(|| missing("type"))?;
    let channel = || -> Result<ChannelName, RequestError> {
        let name = env.channel.as_deref().ok_or_else(|| missing("channel"))?;
        ChannelName::new(name).map_err(RequestError::from)
    };
    Ok(match &*kind {
        "auth" => Request::Auth {
            token: env.token.ok_or_else(|| missing("token"))?,
        },
        "refresh" => Request::Refresh {
            token: env.token.ok_or_else(|| missing("token"))?,
        },
        "subscribe" => Request::Subscribe {
            channel: channel()?,
            since: env.since,
        },
        "unsubscribe" => Request::Unsubscribe {
            channel: channel()?,
        },
        "publish" | "message" => {
            let channel = channel()?;
            let data = env.data.ok_or_else(|| missing("data"))?;
            if nests_deeper_than(data.get(), MAX_DATA_DEPTH) {
                return Err(RequestError::BadRequest(format!(
                    "data nests deeper than {MAX_DATA_DEPTH} levels"
                )));
            }
            Request::Publish { channel, data }
        }
        "presence" => Request::Presence {
            channel: channel()?,
        },
        "presence_stats" => Request::PresenceStats {
            channel: channel()?,
        },
        "history" => Request::History {
            channel: channel()?,
            since: env.since,
            limit: env.limit,
            reverse: env.reverse.unwrap_or(false),
        },
        "ping" => Request::Ping,
        other => return Err(RequestError::UnknownType(truncate(other, 64).into_owned())),
    })
}

fn missing(field: &str) -> RequestError {
    RequestError::BadRequest(format!("missing field `{field}`"))
}

fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

// ---- server to client ----

#[derive(Serialize)]
struct ResponseFrame<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    data: T,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    error: String,
    code: u16,
}

#[derive(Serialize)]
struct PongFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct AuthenticatedFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    user_id: &'a str,
    client_id: &'a str,
}

#[derive(Serialize)]
struct DisconnectFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: u16,
    reason: &'a str,
    reconnect: bool,
}

#[derive(Serialize)]
struct UnsubscribedFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
}

fn encode<T: Serialize>(frame: &T) -> Utf8Bytes {
    // Our frame types hold only strings, numbers, booleans and valid raw
    // JSON; serializing them cannot fail.
    Utf8Bytes::from(serde_json::to_string(frame).expect("frame serializes"))
}

pub fn response<T: Serialize>(id: Option<&RawValue>, data: T) -> Utf8Bytes {
    encode(&ResponseFrame {
        kind: "response",
        id,
        data,
    })
}

pub fn error(id: Option<&RawValue>, error: &RequestError) -> Utf8Bytes {
    encode(&ErrorFrame {
        kind: "error",
        id,
        error: error.to_string(),
        code: error.code(),
    })
}

pub fn pong(id: Option<&RawValue>) -> Utf8Bytes {
    encode(&PongFrame { kind: "pong", id })
}

pub fn authenticated(id: Option<&RawValue>, user_id: &str, client_id: &str) -> Utf8Bytes {
    encode(&AuthenticatedFrame {
        kind: "authenticated",
        id,
        user_id,
        client_id,
    })
}

pub fn disconnect(d: &Disconnect) -> Utf8Bytes {
    encode(&DisconnectFrame {
        kind: "disconnect",
        code: d.code(),
        reason: d.reason(),
        reconnect: d.reconnect(),
    })
}

/// The server ended a subscription (a backend asked, through the server API).
pub fn unsubscribed(channel: &ChannelName) -> Utf8Bytes {
    encode(&UnsubscribedFrame {
        kind: "unsubscribed",
        channel: channel.as_str(),
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

// The `data` of each reply to a client request, borrowed from what the
// broker answered, so that nothing is cloned only to be encoded.

#[derive(Serialize)]
pub struct SubscribeData<'a> {
    pub channel: &'a str,
    pub offset: u64,
    pub epoch: &'a str,
    pub recoverable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publications: Option<Publications<'a>>,
}

#[derive(Serialize)]
pub struct PublishData<'a> {
    pub offset: u64,
    pub epoch: &'a str,
}

#[derive(Serialize)]
pub struct HistoryData<'a> {
    pub channel: &'a str,
    pub offset: u64,
    pub epoch: &'a str,
    pub publications: Publications<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

#[derive(Serialize)]
pub struct PresenceData<'a> {
    pub channel: &'a str,
    pub clients: &'a [ClientInfo],
}

#[derive(Serialize)]
pub struct StatsData<'a> {
    pub channel: &'a str,
    pub num_clients: usize,
    pub num_users: usize,
}

#[derive(Serialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rejected(text: &str) -> (Option<String>, RequestError) {
        let r = parse(text).unwrap_err();
        (r.id.map(|i| i.get().to_owned()), r.error)
    }

    #[test]
    fn parses_requests_and_synonyms() {
        let i = parse(r#"{"type":"message","id":"a1","channel":"chat:x","data":{"t":1}}"#).unwrap();
        assert_eq!(i.id.unwrap().get(), r#""a1""#);
        assert!(matches!(i.request, Request::Publish { data, .. } if data.get() == r#"{"t":1}"#));
        let i =
            parse(r#"{"type":"subscribe","id":7,"channel":"c","since":{"offset":3,"epoch":"e"}}"#)
                .unwrap();
        assert!(
            matches!(i.request, Request::Subscribe { since: Some(ref p), .. } if p.offset == 3)
        );
        assert!(matches!(
            parse(r#"{"type":"ping"}"#).unwrap().request,
            Request::Ping
        ));
    }

    #[test]
    fn rejects_bad_frames_with_reasons() {
        assert!(
            matches!(rejected("{nope"), (None, RequestError::BadRequest(m)) if m.starts_with("malformed JSON"))
        );
        assert!(
            matches!(rejected(r#"{"type":"dance","id":3}"#), (Some(id), RequestError::UnknownType(t)) if id == "3" && t == "dance")
        );
        assert!(
            matches!(rejected(r#"{"type":"subscribe","id":4}"#), (Some(_), RequestError::BadRequest(m)) if m.contains("channel"))
        );
        assert!(
            matches!(rejected(r#"{"type":"publish","channel":"c"}"#), (None, RequestError::BadRequest(m)) if m.contains("data"))
        );
        assert!(matches!(
            rejected(r#"{"type":"subscribe","channel":"a b"}"#),
            (None, RequestError::InvalidChannel(_))
        ));
        assert!(
            matches!(rejected(r#"{"type":"ping","id":{"x":1}}"#), (None, RequestError::BadRequest(m)) if m.contains("id must be"))
        );
        assert!(
            matches!(rejected(r#"{"type":"history","id":5,"channel":"c","limit":"ten"}"#), (Some(id), RequestError::BadRequest(m)) if id == "5" && m.starts_with("invalid frame"))
        );
        assert!(matches!(
            rejected(r#"[1,2]"#),
            (None, RequestError::BadRequest(_))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            r#"{{"type":"publish","channel":"c","data":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = parse(&deep).map(|_| ()).unwrap_err().error;
        assert!(
            matches!(err, RequestError::BadRequest(ref m) if m.contains("nests deeper")),
            "{err:?}"
        );
        let ok = format!(
            r#"{{"type":"publish","channel":"c","data":{}"[[{{"{}}}"#,
            "[".repeat(63),
            "]".repeat(63)
        );
        assert!(parse(&ok).is_ok());
        assert!(!nests_deeper_than(r#"{"a":"[[[[\"[[["}"#, 1));
    }

    #[test]
    fn encodes_replies() {
        let id = RawValue::from_string("42".into()).unwrap();
        assert_eq!(pong(Some(&id)).as_str(), r#"{"type":"pong","id":42}"#);
        assert_eq!(pong(None).as_str(), r#"{"type":"pong"}"#);
        assert_eq!(
            error(Some(&id), &RequestError::RateLimited).as_str(),
            r#"{"type":"error","id":42,"error":"Rate limit exceeded","code":110}"#
        );
        let pubs = [Publication {
            offset: 1,
            frame: Bytes::from_static(br#"{"a":1}"#),
        }];
        assert_eq!(
            response(None, serde_json::json!({"p": Publications(&pubs).serialize(serde_json::value::Serializer).unwrap()})).as_str(),
            r#"{"type":"response","data":{"p":[{"a":1}]}}"#
        );
    }
}
