//! Pusher protocol 7 frames: what clients send, parsed; what the door
//! sends, encoded; and the envelope a Pusher event travels in as the `data`
//! of a native publication, so that one publication carries the event name,
//! its data and who must not get it back.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A frame from a Pusher client.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    Ping,
    Pong,
    Subscribe(Subscribe),
    Unsubscribe {
        channel: String,
    },
    Signin {
        auth: String,
        user_data: String,
    },
    /// `client-*` on a channel.
    ClientEvent {
        event: String,
        channel: String,
        data: &'a RawValue,
    },
    /// Any other event: answered with an error, never forwarded.
    Unknown {
        event: String,
    },
}

/// The `data` of `pusher:subscribe`.
#[derive(Debug, PartialEq, Deserialize)]
pub struct Subscribe {
    pub channel: String,
    #[serde(default)]
    pub auth: Option<String>,
    /// Presence channels: `{"user_id":…,"user_info":…}` as a JSON string,
    /// signed as it is written.
    #[serde(default)]
    pub channel_data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

#[derive(Debug, Deserialize)]
struct UnsubscribeData {
    channel: String,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    event: Cow<'a, str>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Why a client frame was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not a JSON object with an event")]
    NotAFrame,
    #[error("{0} lacks its data")]
    BadData(&'static str),
    #[error("client event without a channel")]
    NoChannel,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientFrame<'_>, FrameError> {
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|_| FrameError::NotAFrame)?;
    Ok(match raw.event.as_ref() {
        "pusher:ping" => ClientFrame::Ping,
        "pusher:pong" => ClientFrame::Pong,
        "pusher:subscribe" => {
            ClientFrame::Subscribe(data(raw.data).ok_or(FrameError::BadData("pusher:subscribe"))?)
        }
        "pusher:unsubscribe" => {
            let d: UnsubscribeData =
                data(raw.data).ok_or(FrameError::BadData("pusher:unsubscribe"))?;
            ClientFrame::Unsubscribe { channel: d.channel }
        }
        "pusher:signin" => {
            let d: SigninData = data(raw.data).ok_or(FrameError::BadData("pusher:signin"))?;
            ClientFrame::Signin {
                auth: d.auth,
                user_data: d.user_data,
            }
        }
        event if event.starts_with("client-") => ClientFrame::ClientEvent {
            event: event.to_owned(),
            channel: raw.channel.ok_or(FrameError::NoChannel)?,
            data: raw.data.ok_or(FrameError::BadData("client event"))?,
        },
        event => ClientFrame::Unknown {
            event: event.to_owned(),
        },
    })
}

/// `data` as an object, or as a string holding one (clients send both).
fn data<T: for<'de> Deserialize<'de>>(raw: Option<&RawValue>) -> Option<T> {
    let raw = raw?.get();
    match serde_json::from_str::<T>(raw) {
        Ok(v) => Some(v),
        Err(_) => {
            let inner: String = serde_json::from_str(raw).ok()?;
            serde_json::from_str(&inner).ok()
        }
    }
}

#[derive(Serialize)]
struct Out<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: D,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

fn encode<D: Serialize>(event: &str, channel: Option<&str>, data: D) -> Utf8Bytes {
    encode_from(event, channel, data, None)
}

fn encode_from<D: Serialize>(
    event: &str,
    channel: Option<&str>,
    data: D,
    user_id: Option<&str>,
) -> Utf8Bytes {
    let out = Out {
        event,
        channel,
        data,
        user_id,
    };
    // Strings, numbers and already-valid raw JSON always serialize.
    Utf8Bytes::from(serde_json::to_string(&out).expect("frame serializes"))
}

/// JSON text as Pusher puts it in `data`: a string holding JSON.
fn json_string<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("value serializes")
}

#[derive(Serialize)]
struct Established<'a> {
    socket_id: &'a str,
    activity_timeout: u64,
}

pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> Utf8Bytes {
    let data = json_string(&Established {
        socket_id,
        activity_timeout: activity_timeout_secs,
    });
    encode("pusher:connection_established", None, data)
}

pub fn pong() -> Utf8Bytes {
    encode("pusher:pong", None, "{}")
}

pub fn ping() -> Utf8Bytes {
    encode("pusher:ping", None, "{}")
}

#[derive(Serialize)]
struct ErrorData<'a> {
    code: Option<u16>,
    message: &'a str,
}

/// `pusher:error`; `code` None for errors that are not the connection's
/// (Pusher sends `null` then).
pub fn error(code: Option<u16>, message: &str) -> Utf8Bytes {
    encode("pusher:error", None, ErrorData { code, message })
}

/// `pusher_internal:subscription_succeeded`, `data` the JSON text to send
/// as a string (`{}`, or the members for presence channels).
pub fn subscription_succeeded(channel: &str, data: &str) -> Utf8Bytes {
    encode(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        data,
    )
}

#[derive(Serialize)]
struct SubscriptionErrorData<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    error: &'a str,
    status: u16,
}

/// `pusher:subscription_error` for one channel: the connection stays.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> Utf8Bytes {
    encode(
        "pusher:subscription_error",
        Some(channel),
        SubscriptionErrorData {
            kind,
            error,
            status,
        },
    )
}

/// An event on a channel; `user_id` for client events on presence channels.
pub fn event(event: &str, channel: &str, data: &RawValue, user_id: Option<&str>) -> Utf8Bytes {
    encode_from(event, Some(channel), data, user_id)
}

#[derive(Serialize)]
struct Member<'a> {
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_info: Option<&'a RawValue>,
}

pub fn member_added(channel: &str, user_id: &str, user_info: Option<&RawValue>) -> Utf8Bytes {
    let data = json_string(&Member { user_id, user_info });
    encode("pusher_internal:member_added", Some(channel), data)
}

pub fn member_removed(channel: &str, user_id: &str) -> Utf8Bytes {
    let data = json_string(&Member {
        user_id,
        user_info: None,
    });
    encode("pusher_internal:member_removed", Some(channel), data)
}

/// `pusher:cache_miss`: a cache channel has no event to replay.
pub fn cache_miss(channel: &str) -> Utf8Bytes {
    encode("pusher:cache_miss", Some(channel), "{}")
}

#[derive(Serialize)]
struct SigninSuccess<'a> {
    user_data: &'a str,
}

pub fn signin_success(user_data: &str) -> Utf8Bytes {
    encode("pusher:signin_success", None, SigninSuccess { user_data })
}

/// A Pusher event as the `data` of a native publication.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// The connection that must not get it (the sender of a client event,
    /// or the API's `socket_id` exclusion).
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    pub socket_id: Option<Cow<'a, str>>,
    /// The sender of a client event on a presence channel.
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    pub user_id: Option<Cow<'a, str>>,
}

impl Envelope<'_> {
    pub fn to_raw(&self) -> Box<RawValue> {
        RawValue::from_string(json_string(self)).expect("serialized JSON is valid")
    }
}

/// The Pusher event a publication's data becomes on channel `name`, for
/// any connection but the one its envelope excludes.
pub fn event_for(name: &str, data: &RawValue, own_socket: &str) -> Option<Utf8Bytes> {
    match serde_json::from_str::<Envelope<'_>>(data.get()) {
        Ok(env) if env.socket_id.as_deref() == Some(own_socket) => None,
        Ok(env) => Some(event(&env.event, name, env.data, env.user_id.as_deref())),
        // From a native publisher: its data as it is.
        Err(_) => Some(event("message", name, data, None)),
    }
}

/// What a native frame (as an owner encoded it, docs/protocol.md) means
/// to a Pusher connection.
#[derive(Debug)]
pub enum NativeFrame<'a> {
    /// A publication's data: a Pusher [`Envelope`], or any JSON from a
    /// native publisher.
    Message(&'a RawValue),
    Join(Presence),
    Leave(Presence),
    /// Anything else (`resubscribed`): nothing for a Pusher client.
    Other,
}

/// A presence entry as join and leave events carry it.
#[derive(Debug, Deserialize)]
pub struct Presence {
    pub client_id: String,
    pub user_id: String,
    #[serde(default)]
    pub info: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct NativeRaw<'a> {
    #[serde(rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    info: Option<Presence>,
}

pub fn native(text: &str) -> NativeFrame<'_> {
    let Ok(raw) = serde_json::from_str::<NativeRaw<'_>>(text) else {
        return NativeFrame::Other;
    };
    match (raw.kind.as_ref(), raw.data, raw.info) {
        ("message", Some(data), _) => NativeFrame::Message(data),
        ("join", _, Some(info)) => NativeFrame::Join(info),
        ("leave", _, Some(info)) => NativeFrame::Leave(info),
        _ => NativeFrame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_pusher_js_sends() {
        assert!(matches!(
            parse(r#"{"event":"pusher:ping","data":{}}"#),
            Ok(ClientFrame::Ping)
        ));
        let f = parse(
            r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel_data":"{\"user_id\":\"1\"}","channel":"presence-a"}}"#,
        );
        let Ok(ClientFrame::Subscribe(s)) = f else {
            panic!("not a subscribe: {f:?}");
        };
        assert_eq!(
            s,
            Subscribe {
                channel: "presence-a".into(),
                auth: Some("k:s".into()),
                channel_data: Some(r#"{"user_id":"1"}"#.into()),
            }
        );
        // data as a string holding the object
        let f = parse(r#"{"event":"pusher:unsubscribe","data":"{\"channel\":\"a\"}"}"#);
        assert!(matches!(f, Ok(ClientFrame::Unsubscribe { ref channel }) if channel == "a"));
        let f = parse(r#"{"event":"client-typing","channel":"private-a","data":{"x":1}}"#);
        assert!(
            matches!(f, Ok(ClientFrame::ClientEvent { ref event, ref channel, data }) if event == "client-typing" && channel == "private-a" && data.get() == r#"{"x":1}"#)
        );
    }

    #[test]
    fn refuses_what_is_not_a_frame() {
        let err = |text: &str| parse(text).err();
        assert_eq!(err("[]"), Some(FrameError::NotAFrame));
        assert_eq!(err(r#"{"data":1}"#), Some(FrameError::NotAFrame));
        assert_eq!(
            err(r#"{"event":"pusher:subscribe"}"#),
            Some(FrameError::BadData("pusher:subscribe"))
        );
        assert_eq!(
            err(r#"{"event":"client-x","data":{}}"#),
            Some(FrameError::NoChannel)
        );
        assert!(matches!(
            parse(r#"{"event":"hello","data":{}}"#),
            Ok(ClientFrame::Unknown { ref event }) if event == "hello"
        ));
    }

    #[test]
    fn server_frames_are_shaped_as_pusher_js_reads_them() {
        assert_eq!(
            connection_established("1.2", 120).as_str(),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#
        );
        assert_eq!(
            error(Some(4001), "no app").as_str(),
            r#"{"event":"pusher:error","data":{"code":4001,"message":"no app"}}"#
        );
        assert_eq!(
            error(None, "x").as_str(),
            r#"{"event":"pusher:error","data":{"code":null,"message":"x"}}"#
        );
        assert_eq!(
            subscription_succeeded("a", "{}").as_str(),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"a","data":"{}"}"#
        );
        let info = RawValue::from_string(r#"{"name":"A"}"#.into()).unwrap();
        assert_eq!(
            member_added("presence-a", "u1", Some(&info)).as_str(),
            r#"{"event":"pusher_internal:member_added","channel":"presence-a","data":"{\"user_id\":\"u1\",\"user_info\":{\"name\":\"A\"}}"}"#
        );
        let data = RawValue::from_string(r#""hi""#.into()).unwrap();
        assert_eq!(
            event("client-x", "presence-a", &data, Some("u1")).as_str(),
            r#"{"event":"client-x","channel":"presence-a","data":"hi","user_id":"u1"}"#
        );
    }

    #[test]
    fn envelopes_round_trip_through_native_frames() {
        let data = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let env = Envelope {
            event: "e".into(),
            data: &data,
            socket_id: Some("1.2".into()),
            user_id: None,
        }
        .to_raw();
        let native_text = format!(
            r#"{{"type":"message","channel":"pusher.a:x","from":"","data":{},"offset":1,"epoch":"e","timestamp":1}}"#,
            env.get()
        );
        let NativeFrame::Message(inner) = native(&native_text) else {
            panic!("not a message");
        };
        let back: Envelope<'_> = serde_json::from_str(inner.get()).unwrap();
        assert_eq!(back.event, "e");
        assert_eq!(back.data.get(), r#"{"a":1}"#);
        assert_eq!(back.socket_id.as_deref(), Some("1.2"));
        let join = native(
            r#"{"type":"join","channel":"c","info":{"client_id":"1.2","user_id":"u","info":{"n":1}}}"#,
        );
        assert!(matches!(join, NativeFrame::Join(p) if p.client_id == "1.2" && p.user_id == "u"));
    }
}
