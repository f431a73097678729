//! The client wire format (docs/protocol.md): every JSON frame between a
//! WebSocket client and a gateway, defined once and used by the gateway,
//! the server API, the Rust client and the load tool alike.
//!
//! - [`request`]: what clients send: [`request::RequestFrame`] to encode,
//!   and [`request::Request`], a frame the server parsed and validated.
//! - [`parse`]: the server's strict parser of request frames.
//! - [`data`]: the checking parse of a publication's `data`, which every
//!   door that accepts `data` applies.
//! - [`reply`]: replies to requests (`response`, `error`, `pong`,
//!   `authenticated`) and the `data` of each `response`.
//! - [`push`]: frames the server sends unasked: publications, `join`/`leave`,
//!   `resubscribed`, `unsubscribed`, `disconnect`. Those a channel's
//!   subscribers share are encoded once, into [`bytes::Bytes`].
//! - [`server`]: [`ServerFrame`], any frame the server sends, as a reader
//!   takes it in whole or only peeks at it ([`Peek`]).
//! - [`code`]: the error codes of `error` frames and the close codes of
//!   `disconnect` frames.
//!
//! Each shape is one type, generic where writers and readers hold its parts
//! differently: the server encodes borrowed strings and raw JSON, a client
//! decodes owned strings and parsed values.

pub mod code;
pub mod data;
pub mod parse;
pub mod push;
pub mod reply;
pub mod request;
pub mod server;

pub use code::{ErrorCode, close};
pub use data::DataError;
pub use parse::{FrameError, Incoming, Rejected};
pub use push::{Disconnect, Event, Message, PresenceEvent, Resubscribed, Unsubscribed};
pub use request::{Request, RequestFrame};
pub use server::{Kind, Peek, ServerFrame};

use bytes::Bytes;
use serde::Serialize;

/// Encodes a frame sent to one connection.
fn text<T: Serialize>(frame: &T) -> String {
    // Frame types hold only strings, numbers, booleans, already-valid raw
    // JSON and reply data whose serialization cannot fail (plain structs);
    // encoding them into a String cannot fail.
    serde_json::to_string(frame).expect("frame serializes")
}

/// Encodes a frame shared, as the same bytes, by many connections.
fn shared<T: Serialize>(frame: &T) -> Bytes {
    Bytes::from(text(frame))
}
