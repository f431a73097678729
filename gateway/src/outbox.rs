//! How a connection's messages become WebSocket frames, by the
//! subprotocol it chose: one message per frame (`switchboard`, or none),
//! or, for `switchboard.batch`, every message ready at once in as few
//! frames as the frame size allows, one message per line; and how a
//! client's frame splits into requests (docs/protocol.md, "Batched
//! frames").

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Error as WsError, Message, Utf8Bytes},
};

use futures_util::SinkExt;

use crate::handshake::BATCH_PROTOCOL;

/// Most requests one client frame may carry under `switchboard.batch`.
/// Each is handled as if sent alone, and their replies wait to go out
/// together: the bound keeps that wait, and the reply frame, short.
pub const MAX_BATCH_REQUESTS: usize = 100;

/// The frame layout a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One message per frame.
    Plain,
    /// Several messages per frame, separated by `\n`, each frame at most
    /// `max_bytes` long unless one message alone is longer.
    Batch { max_bytes: usize },
}

impl Framing {
    /// The framing of the subprotocol selected in the handshake.
    /// `max_bytes` is the connection's own limit on a client message: the
    /// server sends nothing it would not accept itself.
    pub fn of(protocol: Option<&str>, max_bytes: usize) -> Self {
        match protocol {
            Some(BATCH_PROTOCOL) => Framing::Batch { max_bytes },
            _ => Framing::Plain,
        }
    }

    /// The requests in one client text frame: the whole frame, or under
    /// batching its non-empty lines.
    pub fn requests(self, text: &str) -> Result<Vec<&str>, TooManyRequests> {
        match self {
            Framing::Plain => Ok(vec![text]),
            Framing::Batch { .. } => {
                let mut requests = Vec::new();
                for line in text.split('\n') {
                    if line.trim().is_empty() {
                        continue;
                    }
                    if requests.len() == MAX_BATCH_REQUESTS {
                        return Err(TooManyRequests);
                    }
                    requests.push(line);
                }
                Ok(requests)
            }
        }
    }
}

/// A batched client frame held more than [`MAX_BATCH_REQUESTS`] requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRequests;

/// Gathers the messages of one socket write into frames. Plain framing
/// feeds each message as it comes; batch framing joins them, and copies
/// only when there are at least two to join (a lone message goes out as
/// the shared bytes it already is).
pub struct Outbox {
    framing: Framing,
    /// The first message of the frame being gathered, not yet copied.
    first: Option<Utf8Bytes>,
    /// The frame being gathered, once it holds two messages or more.
    joined: String,
}

impl Outbox {
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            first: None,
            joined: String::new(),
        }
    }

    /// Adds one message to the write; may feed a complete frame to `ws`.
    pub async fn push<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        message: Utf8Bytes,
    ) -> Result<(), WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Framing::Batch { max_bytes } = self.framing else {
            return ws.feed(Message::Text(message)).await;
        };
        let message = one_line(message);
        let gathered = match &self.first {
            Some(first) => first.len(),
            None => self.joined.len(),
        };
        if gathered == 0 {
            self.first = Some(message);
            return Ok(());
        }
        if gathered + 1 + message.len() > max_bytes {
            self.feed_gathered(ws).await?;
            self.first = Some(message);
            return Ok(());
        }
        if let Some(first) = self.first.take() {
            self.joined =
                String::with_capacity((2 * (first.len() + 1 + message.len())).min(max_bytes));
            self.joined.push_str(&first);
        }
        self.joined.push('\n');
        self.joined.push_str(&message);
        Ok(())
    }

    /// Feeds what is still gathered; the caller flushes.
    pub async fn finish<S>(&mut self, ws: &mut WebSocketStream<S>) -> Result<(), WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.feed_gathered(ws).await
    }

    async fn feed_gathered<S>(&mut self, ws: &mut WebSocketStream<S>) -> Result<(), WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(first) = self.first.take() {
            return ws.feed(Message::Text(first)).await;
        }
        if self.joined.is_empty() {
            return Ok(());
        }
        let frame = std::mem::take(&mut self.joined);
        ws.feed(Message::Text(Utf8Bytes::from(frame))).await
    }
}

/// The message on one line. A line feed in a JSON text can only be
/// whitespace between tokens (inside a string it must be escaped), so a
/// space reads the same; publications keep the `data` their publisher
/// wrote, line breaks included, and only those need the copy.
fn one_line(message: Utf8Bytes) -> Utf8Bytes {
    if !message.as_bytes().contains(&b'\n') {
        return message;
    }
    Utf8Bytes::from(message.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_takes_the_frame_whole() {
        let text = "{\"type\":\"ping\"}\n{\"type\":\"ping\"}";
        assert_eq!(Framing::Plain.requests(text), Ok(vec![text]));
    }

    #[test]
    fn batch_splits_lines_and_skips_blank_ones() {
        let batch = Framing::Batch { max_bytes: 1024 };
        assert_eq!(
            batch.requests("{\"a\":1}\n\n{\"b\":2}\r\n  \n{\"c\":3}\n"),
            Ok(vec!["{\"a\":1}", "{\"b\":2}\r", "{\"c\":3}"])
        );
        let most = vec!["{}"; MAX_BATCH_REQUESTS].join("\n");
        assert_eq!(
            batch.requests(&most).map(|r| r.len()),
            Ok(MAX_BATCH_REQUESTS)
        );
        let over = format!("{most}\n{{}}");
        assert_eq!(batch.requests(&over), Err(TooManyRequests));
    }

    #[test]
    fn framing_follows_the_selected_subprotocol() {
        assert_eq!(Framing::of(None, 10), Framing::Plain);
        assert_eq!(Framing::of(Some("switchboard"), 10), Framing::Plain);
        assert_eq!(
            Framing::of(Some("switchboard.batch"), 10),
            Framing::Batch { max_bytes: 10 }
        );
    }

    #[test]
    fn line_breaks_become_spaces() {
        let m = Utf8Bytes::from("{\"data\":{\n  \"a\": \"x\\ny\"\n}}");
        assert_eq!(one_line(m).as_str(), "{\"data\":{   \"a\": \"x\\ny\" }}");
    }
}
