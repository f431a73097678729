//! The server's parser of request frames: strict about the type of every
//! envelope field (docs/protocol.md §2), and recovering the `id` of a frame
//! it rejects wherever that can still be read. Text in, values out.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use super::{data, request::Request};
use crate::{BrokerError, ChannelName, Position};

/// Why a frame is not a request; the gateway answers each with its code
/// (107, 104, 113).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid channel name: {0}")]
    InvalidChannel(&'static str),
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
    pub error: FrameError,
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
    cursor: Option<String>,
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
                error: FrameError::BadRequest(why),
            });
        }
    };
    let id = env.id;
    if let Some(id) = id
        && !valid_id(id)
    {
        return Err(Rejected {
            id: None,
            error: FrameError::BadRequest("id must be a number or a string".into()),
        });
    }
    request(env)
        .map(|request| Incoming { id, request })
        .map_err(|error| Rejected { id, error })
}

fn valid_id(id: &RawValue) -> bool {
    matches!(id.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'))
}

fn request(env: Envelope<'_>) -> Result<Request<'_>, FrameError> {
    let kind = env.kind.ok_or_else(|| missing("type"))?;
    let channel = || -> Result<ChannelName, FrameError> {
        let name = env.channel.as_deref().ok_or_else(|| missing("channel"))?;
        ChannelName::new(name).map_err(|e| match e {
            BrokerError::InvalidChannel(why) => FrameError::InvalidChannel(why),
            other => FrameError::BadRequest(other.to_string()),
        })
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
            data::check(data.get()).map_err(|e| FrameError::BadRequest(e.to_string()))?;
            Request::Publish { channel, data }
        }
        "presence" => Request::Presence {
            channel: channel()?,
            cursor: env.cursor,
            limit: env.limit,
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
        other => return Err(FrameError::UnknownType(truncate(other, 64).into_owned())),
    })
}

fn missing(field: &str) -> FrameError {
    FrameError::BadRequest(format!("missing field `{field}`"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> (Option<String>, FrameError) {
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
            matches!(rejected("{nope"), (None, FrameError::BadRequest(m)) if m.starts_with("malformed JSON"))
        );
        assert!(
            matches!(rejected(r#"{"type":"dance","id":3}"#), (Some(id), FrameError::UnknownType(t)) if id == "3" && t == "dance")
        );
        assert!(
            matches!(rejected(r#"{"type":"subscribe","id":4}"#), (Some(_), FrameError::BadRequest(m)) if m.contains("channel"))
        );
        assert!(
            matches!(rejected(r#"{"type":"publish","channel":"c"}"#), (None, FrameError::BadRequest(m)) if m.contains("data"))
        );
        assert!(matches!(
            rejected(r#"{"type":"subscribe","channel":"a b"}"#),
            (None, FrameError::InvalidChannel(_))
        ));
        assert!(
            matches!(rejected(r#"{"type":"ping","id":{"x":1}}"#), (None, FrameError::BadRequest(m)) if m.contains("id must be"))
        );
        assert!(
            matches!(rejected(r#"{"type":"history","id":5,"channel":"c","limit":"ten"}"#), (Some(id), FrameError::BadRequest(m)) if id == "5" && m.starts_with("invalid frame"))
        );
        assert!(matches!(
            rejected(r#"[1,2]"#),
            (None, FrameError::BadRequest(_))
        ));
    }

    #[test]
    fn poison_data_is_refused_with_the_rule() {
        for (data, rule) in [
            ("1e999999", "beyond the range"),
            (r#""\ud800""#, "lone UTF-16 surrogate"),
            (r#"[1,{"k":-1e309}]"#, "beyond the range"),
        ] {
            let text = format!(r#"{{"type":"publish","id":1,"channel":"c","data":{data}}}"#);
            let (id, err) = rejected(&text);
            assert_eq!(id.as_deref(), Some("1"));
            assert!(
                matches!(err, FrameError::BadRequest(ref m) if m.contains(rule)),
                "{err:?}"
            );
        }
        let long = format!(
            r#"{{"type":"publish","channel":"c","data":[{}]}}"#,
            "7".repeat(60_000)
        );
        assert!(
            matches!(rejected(&long).1, FrameError::BadRequest(m) if m.contains("longer than 100"))
        );
        // A bad escape is already malformed JSON to the envelope's parser.
        let escape = r#"{"type":"publish","channel":"c","data":"\q"}"#;
        assert!(
            matches!(rejected(escape).1, FrameError::BadRequest(m) if m.starts_with("malformed JSON"))
        );
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
            matches!(err, FrameError::BadRequest(ref m) if m.contains("nests deeper")),
            "{err:?}"
        );
        let ok = format!(
            r#"{{"type":"publish","channel":"c","data":{}"[[{{"{}}}"#,
            "[".repeat(63),
            "]".repeat(63)
        );
        assert!(parse(&ok).is_ok());
        assert!(!data::nests_deeper_than(r#"{"a":"[[[[\"[[["}"#, 1));
    }
}
