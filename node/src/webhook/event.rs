//! What a channel's owner observed, and the Pusher webhook event it becomes.

use serde::Serialize;
use serde_json::value::RawValue;

/// A change the owner saw on one of an app's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The channel's first subscriber arrived.
    Occupied,
    /// Its last subscriber left.
    Vacated,
    /// A user's first connection joined a presence channel.
    MemberAdded { user_id: String },
    /// A user's last connection left a presence channel.
    MemberRemoved { user_id: String },
    /// A client event was published (its envelope, as the Pusher door
    /// wrote it).
    ClientEvent(ClientEvent),
}

/// A client event as the owner stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEvent {
    pub event: String,
    /// Pusher's webhook carries the data as a string: a JSON string's
    /// contents, or any other value's JSON text.
    pub data: String,
    pub socket_id: String,
    pub user_id: Option<String>,
}

impl ClientEvent {
    /// Reads the Pusher door's envelope (`{"event","data","socket_id",
    /// "user_id"?}`); `None` unless it is a client event (`client-` name
    /// and a socket id).
    pub fn from_envelope(data: &RawValue) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            event: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            data: &'a RawValue,
            socket_id: Option<String>,
            user_id: Option<String>,
        }
        let e: Envelope<'_> = serde_json::from_str(data.get()).ok()?;
        if !e.event.starts_with("client-") {
            return None;
        }
        let text = match serde_json::from_str::<String>(e.data.get()) {
            Ok(s) => s,
            Err(_) => e.data.get().to_owned(),
        };
        Some(Self {
            event: e.event.into_owned(),
            data: text,
            socket_id: e.socket_id?,
            user_id: e.user_id,
        })
    }
}

/// The names of Pusher's webhook events, as `event_types` filters them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    ChannelOccupied,
    ChannelVacated,
    MemberAdded,
    MemberRemoved,
    ClientEvent,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        Self::ChannelOccupied,
        Self::ChannelVacated,
        Self::MemberAdded,
        Self::MemberRemoved,
        Self::ClientEvent,
    ];
}

impl Change {
    pub fn event_type(&self) -> EventType {
        match self {
            Self::Occupied => EventType::ChannelOccupied,
            Self::Vacated => EventType::ChannelVacated,
            Self::MemberAdded { .. } => EventType::MemberAdded,
            Self::MemberRemoved { .. } => EventType::MemberRemoved,
            Self::ClientEvent(_) => EventType::ClientEvent,
        }
    }

    /// The event as Pusher's webhook body lists it, for the channel the
    /// app names `channel`.
    pub fn to_json(&self, channel: &str) -> serde_json::Value {
        let name = self.event_type();
        let mut v = serde_json::json!({ "name": name, "channel": channel });
        let o = v.as_object_mut().expect("an object");
        match self {
            Self::Occupied | Self::Vacated => {}
            Self::MemberAdded { user_id } | Self::MemberRemoved { user_id } => {
                o.insert("user_id".into(), user_id.clone().into());
            }
            Self::ClientEvent(e) => {
                o.insert("event".into(), e.event.clone().into());
                o.insert("data".into(), e.data.clone().into());
                o.insert("socket_id".into(), e.socket_id.clone().into());
                if let Some(user) = &e.user_id {
                    o.insert("user_id".into(), user.clone().into());
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn a_client_event_envelope_is_read_with_its_data_as_text() {
        let e = ClientEvent::from_envelope(&raw(
            r#"{"event":"client-typing","data":{"a":1},"socket_id":"1.2","user_id":"u"}"#,
        ))
        .unwrap();
        assert_eq!(e.data, r#"{"a":1}"#);
        assert_eq!(e.user_id.as_deref(), Some("u"));
        let s = ClientEvent::from_envelope(&raw(
            r#"{"event":"client-x","data":"hello","socket_id":"1.2"}"#,
        ))
        .unwrap();
        assert_eq!(s.data, "hello");
    }

    #[test]
    fn other_publications_are_not_client_events() {
        for body in [
            r#"{"event":"news","data":"x","socket_id":"1.2"}"#,
            r#"{"event":"client-x","data":"x"}"#,
            r#"{"text":"hi"}"#,
            r#""plain""#,
        ] {
            assert_eq!(ClientEvent::from_envelope(&raw(body)), None, "{body}");
        }
    }

    #[test]
    fn events_serialise_as_pusher_lists_them() {
        let v = Change::MemberAdded {
            user_id: "7".into(),
        }
        .to_json("presence-room");
        assert_eq!(
            v,
            serde_json::json!({"name":"member_added","channel":"presence-room","user_id":"7"})
        );
        let v = Change::Vacated.to_json("news");
        assert_eq!(
            v,
            serde_json::json!({"name":"channel_vacated","channel":"news"})
        );
    }
}
