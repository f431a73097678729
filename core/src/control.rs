//! Control commands: instructions for one user's connections, sent by the
//! server API (disconnect the user, unsubscribe the user from a channel).
//!
//! They travel on the user's personal channel `#user` because every gateway
//! where the user has a connection holds a subscription to it: the same path
//! as publications reaches the user cluster-wide, with no registry of who is
//! connected where. Gateways apply them to the user's local connections; they
//! are never shown to clients as messages, carry no offset and are never
//! kept in history.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ChannelName;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Control {
    /// Close every connection of the user with this code and reason; tell
    /// the client whether to reconnect.
    Disconnect {
        code: u16,
        reason: String,
        reconnect: bool,
    },
    /// End the user's subscriptions to `channel`.
    Unsubscribe { channel: ChannelName },
    /// For the gateway itself, on any channel: the owner replaced the
    /// channel's state (a newer copy won after a partition); subscribe
    /// again from the last position, so that clients are told of the
    /// change of epoch.
    Resubscribe,
}

impl Control {
    /// The delivery frame: encoded once by the owner, like publications.
    pub fn encode(&self) -> Bytes {
        // A tagged enum of strings, numbers and booleans always serializes.
        Bytes::from(serde_json::to_vec(self).expect("control command serializes"))
    }

    pub fn decode(frame: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for c in [
            Control::Disconnect {
                code: 4000,
                reason: "banned".into(),
                reconnect: false,
            },
            Control::Unsubscribe {
                channel: ChannelName::new("chat:a").unwrap(),
            },
        ] {
            assert_eq!(Control::decode(&c.encode()).unwrap(), c);
        }
        assert_eq!(
            &Control::Unsubscribe {
                channel: ChannelName::new("chat:a").unwrap()
            }
            .encode()[..],
            br#"{"command":"unsubscribe","channel":"chat:a"}"#
        );
        assert!(Control::decode(br#"{"command":"explode"}"#).is_err());
    }
}
