//! The wire format (docs/protocol.md): what the server sends, parsed into
//! types, and the shapes of its replies' `data`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A position in a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// One publication (a `message` frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub channel: String,
    /// The publisher's user id; `""` for anonymous publishers.
    pub from: String,
    pub data: Value,
    pub offset: u64,
    pub epoch: String,
    /// When the server accepted it, in ms since the Unix epoch.
    pub timestamp: u64,
}

impl Publication {
    pub fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

/// One connection in a presence list or a join/leave event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub client_id: String,
    pub user_id: String,
    /// The `info` claim of the connection's token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PresenceStats {
    pub channel: String,
    pub num_clients: u64,
    pub num_users: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct History {
    pub channel: String,
    /// The channel's current position.
    pub offset: u64,
    pub epoch: String,
    pub publications: Vec<Publication>,
    /// With `since`: whether nothing after it was lost.
    #[serde(default)]
    pub complete: Option<bool>,
}

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
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SubscribeReply {
    pub offset: u64,
    pub epoch: String,
    #[serde(default)]
    pub recoverable: bool,
    #[serde(default)]
    pub recovered: Option<bool>,
    #[serde(default)]
    pub publications: Vec<Publication>,
}

#[derive(Deserialize)]
struct PresenceReply {
    clients: Vec<ClientInfo>,
}

pub(crate) fn presence_clients(data: Value) -> Result<Vec<ClientInfo>, serde_json::Error> {
    serde_json::from_value::<PresenceReply>(data).map(|r| r.clients)
}

/// A frame from the server.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerFrame {
    Response {
        id: Option<u64>,
        #[serde(default)]
        data: Value,
    },
    Error {
        id: Option<u64>,
        error: String,
        code: u16,
    },
    Pong {
        id: Option<u64>,
    },
    Authenticated {
        id: Option<u64>,
        user_id: String,
        client_id: String,
    },
    Message(Publication),
    Join {
        channel: String,
        info: ClientInfo,
    },
    Leave {
        channel: String,
        info: ClientInfo,
    },
    Disconnect {
        code: u16,
        reason: String,
        reconnect: bool,
    },
    /// Frame types added to the protocol later.
    #[serde(other)]
    Unknown,
}

impl ServerFrame {
    pub(crate) fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_frames() {
        let m = ServerFrame::parse(
            r#"{"type":"message","channel":"c","from":"","data":{"t":1},"offset":3,"epoch":"e","timestamp":5}"#,
        )
        .unwrap();
        assert!(matches!(m, ServerFrame::Message(p) if p.offset == 3 && p.data["t"] == 1));
        let e =
            ServerFrame::parse(r#"{"type":"error","id":7,"error":"permission denied","code":103}"#)
                .unwrap();
        assert!(matches!(
            e,
            ServerFrame::Error {
                id: Some(7),
                code: 103,
                ..
            }
        ));
        let j = ServerFrame::parse(
            r#"{"type":"join","channel":"c","info":{"client_id":"x","user_id":"u","info":{"n":1}}}"#,
        )
        .unwrap();
        assert!(
            matches!(j, ServerFrame::Join { info, .. } if info.info == Some(serde_json::json!({"n":1})))
        );
        assert!(matches!(
            ServerFrame::parse(r#"{"type":"novelty","x":1}"#).unwrap(),
            ServerFrame::Unknown
        ));
        let r = ServerFrame::parse(r#"{"type":"response","id":1,"data":{}}"#).unwrap();
        assert!(matches!(r, ServerFrame::Response { id: Some(1), .. }));
    }
}
