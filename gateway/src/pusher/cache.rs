//! Cache channels: each keeps its last event (one publication of history
//! in its namespace), replayed to a new subscriber right after
//! `subscription_succeeded`, or `pusher:cache_miss` when there is none.

use switchboard_core::{Broker, HistoryRequest};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::pusher::{
    channel::PusherChannel,
    frame::{self, NativeFrame},
};

/// The channel's last event as of the subscription at `at_offset`, as
/// `socket_id` is to see it. An event newer than the subscription arrives
/// live, so it is not replayed as well.
pub async fn replay<B: Broker>(
    broker: &B,
    channel: &PusherChannel,
    at_offset: u64,
    socket_id: &str,
) -> Utf8Bytes {
    let req = HistoryRequest {
        channel: channel.native.clone(),
        since: None,
        limit: 1,
        reverse: true,
    };
    let last = match broker.history(req).await {
        Ok(reply) => reply.publications.into_iter().next(),
        Err(e) => {
            tracing::warn!(channel = %channel.native, error = %e, "cache channel history unavailable");
            None
        }
    };
    last.filter(|p| p.offset <= at_offset)
        .and_then(|p| {
            let text = std::str::from_utf8(&p.frame).ok()?;
            match frame::native(text) {
                NativeFrame::Message(data) => frame::event_for(&channel.name, data, socket_id),
                _ => None,
            }
        })
        .unwrap_or_else(|| frame::cache_miss(&channel.name))
}
