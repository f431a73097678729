//! The test kit's in-process server, reached by real WebSocket clients,
//! and what the gateway's tests read out of replies.

#![allow(dead_code, unused_imports)]

use std::time::Duration;

pub(crate) use switchboard_gateway::Settings;
pub(crate) use switchboard_testkit::{
    ForTest, TestServer, WAIT,
    client::{Client, Closed},
    http,
    settings::{API_KEY, OLD_API_KEY, SECRET, issuer},
};

/// The offsets of a reply's `publications`.
pub(crate) fn offsets(reply: &serde_json::Value) -> Vec<u64> {
    field(reply, "offset")
        .iter()
        .map(|o| o.as_u64().expect("offset is a number"))
        .collect()
}

/// One field of each of a reply's `publications`.
pub(crate) fn field(reply: &serde_json::Value, name: &str) -> Vec<serde_json::Value> {
    reply["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p[name].clone())
        .collect()
}

/// A token for `user`, valid for an hour.
pub(crate) fn token(user: &str) -> String {
    switchboard_testkit::settings::token(user, Duration::from_secs(3600))
}
