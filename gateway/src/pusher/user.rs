//! Users: who a connection is (presence `user_id`s, sign-in `id`s, as
//! strings or numbers), and the channel each signed-in user listens on so
//! that `terminate_connections` reaches its connections on every gateway.

use serde::Deserialize;
use switchboard_core::ChannelName;

use crate::{
    hub::Outgoing,
    pusher::{
        close::Close,
        frame::{self, Envelope, NativeFrame},
        session::Reply,
    },
};

/// The event a backend's `terminate_connections` sends on a user's channel.
pub const TERMINATE: &str = "pusher_internal:terminate";

/// The channel every connection signed in as `user` of app `app_id`
/// listens on; None for user ids that cannot be part of a channel name.
pub fn user_channel(app_id: &str, user: &str) -> Option<ChannelName> {
    let name = format!("{}:{user}", crate::config::pusher::users_namespace(app_id));
    ChannelName::new(&name).ok()
}

/// The `user_data` of `pusher:signin`: the user is its `id`.
#[derive(Deserialize)]
pub struct UserData {
    pub id: UserId,
}

/// Pusher user ids are strings; Laravel's are often numbers.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum UserId {
    Text(String),
    Number(serde_json::Number),
}

impl UserId {
    pub fn into_string(self) -> String {
        match self {
            UserId::Text(s) => s,
            UserId::Number(n) => n.to_string(),
        }
    }
}

/// A publication on the signed-in user's channel: `terminate_connections`
/// ends the connection; nothing else is sent there.
pub fn on_user_channel(out: &Outgoing) -> Reply {
    let NativeFrame::Message(data) = frame::native(out.text.as_str()) else {
        return Reply::default();
    };
    match serde_json::from_str::<Envelope<'_>>(data.get()) {
        Ok(env) if env.event == TERMINATE => Reply {
            frames: Vec::new(),
            close: Some(Close::Terminated),
        },
        _ => Reply::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_may_be_numbers() {
        let d: UserData = serde_json::from_str(r#"{"id":42,"name":"x"}"#).unwrap();
        assert_eq!(d.id.into_string(), "42");
        let d: UserData = serde_json::from_str(r#"{"id":"alice"}"#).unwrap();
        assert_eq!(d.id.into_string(), "alice");
    }

    #[test]
    fn each_user_has_a_channel_in_its_apps_namespace() {
        let c = user_channel("7", "alice@example.com").unwrap();
        assert_eq!(c.as_str(), "pusher.7.users:alice@example.com");
        assert_eq!(user_channel("7", "has space"), None);
    }
}
