//! The server API's results: what each operation ([`super::ops`]) answers,
//! serialized as the HTTP JSON bodies and converted into the gRPC replies.

use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_core::{ClientInfo, Position, frame::Message};

use super::error::ErrorBody;

#[derive(Debug, Serialize)]
pub struct PublishResult {
    pub offset: u64,
    pub epoch: String,
}

impl From<Position> for PublishResult {
    fn from(p: Position) -> Self {
        Self {
            offset: p.offset,
            epoch: p.epoch,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BroadcastResult {
    pub results: Vec<BroadcastOutcome>,
}

/// One channel of a broadcast: its position, or why it failed.
#[derive(Debug, Serialize)]
pub struct BroadcastOutcome {
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Serialize)]
pub struct Empty {}

#[derive(Debug, Serialize)]
pub struct PresenceResult {
    pub channel: String,
    pub clients: Vec<ClientInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PresenceStatsResult {
    pub channel: String,
    pub num_clients: usize,
    pub num_users: usize,
}

#[derive(Debug, Serialize)]
pub struct UserOnlineResult {
    pub user: String,
    pub online: bool,
    pub num_clients: usize,
}

#[derive(Debug, Serialize)]
pub struct HistoryResult {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
    pub publications: Vec<Publication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// A publication as history returns it; read from the frame the owner
/// encoded, so it has exactly what subscribers received.
#[derive(Debug, Serialize)]
pub struct Publication {
    pub from: String,
    pub data: Box<RawValue>,
    pub offset: u64,
    pub epoch: String,
    pub timestamp: u64,
}

impl Publication {
    /// Reads a stored `message` frame.
    pub fn decode(frame: &[u8]) -> Result<Self, serde_json::Error> {
        let m: Message<String, Box<RawValue>> = serde_json::from_slice(frame)?;
        Ok(Self {
            from: m.from,
            data: m.data,
            offset: m.offset,
            epoch: m.epoch,
            timestamp: m.timestamp,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ChannelsResult {
    pub channels: Vec<ChannelEntry>,
    /// More channels matched than `limit`.
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
pub struct ChannelEntry {
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_clients: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_users: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct InfoResult {
    pub gateway: GatewayInfo,
    pub nodes: Vec<NodeEntry>,
}

#[derive(Debug, Serialize)]
pub struct GatewayInfo {
    pub name: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub connections: usize,
    pub channels: usize,
}

#[derive(Debug, Serialize)]
pub struct NodeEntry {
    pub name: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub num_channels: usize,
    pub num_active_channels: usize,
    pub num_gateways: usize,
    pub num_clients: usize,
    pub num_publications: u64,
}
