//! The wire format (docs/protocol.md) as this client holds it: the shared
//! frame types of `switchboard_core::frame`, decoded into owned strings
//! and parsed JSON values, and the request frames it encodes.

use serde::Serialize;
use serde_json::{Map, Value};
pub use switchboard_core::Position;
use switchboard_core::frame::{
    self, RequestFrame,
    push::Message,
    reply::{HistoryData, PresenceData, StatsData, SubscribeData},
};

use crate::error::ClientError;

/// One publication (a `message` frame).
pub type Publication = Message<String, Value>;

/// One connection in a presence list or a join/leave event; `info` is the
/// `info` claim of the connection's token, if any.
pub type ClientInfo = switchboard_core::ClientInfo<Value>;

/// A `presence_stats` reply.
pub type PresenceStats = StatsData<String>;

/// A `history` reply.
pub type History = HistoryData<String, Vec<Publication>>;

/// What to read with [`crate::Client::history`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Most publications (the server caps it).
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
    /// Only publications after this position.
    pub since: Option<Position>,
}

/// The `data` of a subscribe reply.
pub(crate) type SubscribeReply = SubscribeData<String, Vec<Publication>>;

/// One page of presence: its clients, and where the next page starts.
pub(crate) fn presence_page(
    data: Value,
) -> Result<(Vec<ClientInfo>, Option<String>), serde_json::Error> {
    serde_json::from_value::<PresenceData<String, Vec<ClientInfo>>>(data)
        .map(|r| (r.clients, r.next_cursor))
}

/// A frame from the server; this client numbers its requests.
pub(crate) type ServerFrame = frame::ServerFrame<String, u64, Value, Value, ClientInfo>;

pub(crate) fn parse(text: &str) -> Result<ServerFrame, serde_json::Error> {
    serde_json::from_str(text)
}

/// A request without user data, as the object the request queue numbers.
pub(crate) fn request(frame: &RequestFrame<'_, ()>) -> Map<String, Value> {
    // Strings, numbers and positions always serialize into an object.
    match serde_json::to_value(frame) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("a request frame is a JSON object"),
    }
}

/// A `publish` request; fails if `data` does not serialize.
pub(crate) fn publish(
    channel: &str,
    data: impl Serialize,
) -> Result<Map<String, Value>, ClientError> {
    let data = serde_json::to_value(data).map_err(|e| ClientError::Protocol(e.to_string()))?;
    match serde_json::to_value(RequestFrame::Publish { channel, data }) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => unreachable!("a request frame is a JSON object"),
        Err(e) => Err(ClientError::Protocol(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_frames_into_owned_values() {
        let m = parse(
            r#"{"type":"message","channel":"c","from":"","data":{"t":1},"offset":3,"epoch":"e","timestamp":5}"#,
        )
        .unwrap();
        assert!(matches!(m, ServerFrame::Message(p) if p.offset == 3 && p.data["t"] == 1));
        let j = parse(
            r#"{"type":"join","channel":"c","info":{"client_id":"x","user_id":"u","info":{"n":1}}}"#,
        )
        .unwrap();
        assert!(
            matches!(j, ServerFrame::Join(e) if e.info.info == Some(serde_json::json!({"n":1})))
        );
        assert!(matches!(
            parse(r#"{"type":"novelty","x":1}"#).unwrap(),
            ServerFrame::Unknown
        ));
    }

    #[test]
    fn encodes_requests() {
        let since = Position {
            offset: 2,
            epoch: "e".into(),
        };
        let sub = request(&RequestFrame::Subscribe {
            channel: "c",
            since: Some(&since),
        });
        assert_eq!(
            Value::Object(sub),
            serde_json::json!({"type":"subscribe","channel":"c","since":{"offset":2,"epoch":"e"}})
        );
        let publish = publish("c", serde_json::json!({"t": 1})).unwrap();
        assert_eq!(
            Value::Object(publish),
            serde_json::json!({"type":"publish","channel":"c","data":{"t":1}})
        );
    }
}
