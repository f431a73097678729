//! The server API's parameters: the HTTP JSON bodies, which the gRPC
//! messages convert into, so that both transports are checked by the same
//! operations ([`super::ops`]). Unknown fields are refused rather than
//! ignored, so that a misspelt option is not silently dropped.

use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_core::Position;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishParams {
    pub channel: String,
    pub data: Box<RawValue>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastParams {
    pub channels: Vec<String>,
    pub data: Box<RawValue>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendToUserParams {
    pub user: String,
    pub data: Box<RawValue>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectUserParams {
    pub user: String,
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub reconnect: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeUserParams {
    pub user: String,
    pub channel: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelParams {
    pub channel: String,
}

/// A page of presence: after `cursor` (the last page's `next_cursor`), at
/// most `limit` clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceParams {
    pub channel: String,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserParams {
    pub user: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    pub channel: String,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub since: Option<Position>,
    #[serde(default)]
    pub reverse: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsParams {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoParams {}
