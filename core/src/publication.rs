//! [`Publication`]: one stored publication as recovery and history hand it
//! out: its offset in the channel's order, and the client frame the owner
//! encoded once. Carrying the offset beside the frame spares readers (the
//! router ordering recovered and live deliveries) from parsing it back out
//! of client JSON.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub offset: u64,
    /// The client frame, exactly as live subscribers received it.
    pub frame: Bytes,
}
