//! A protocol-speaking WebSocket client for tests.

use std::collections::VecDeque;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::WAIT;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code, or `None` if the socket ended without a close frame.
    pub code: Option<u16>,
    pub reason: String,
    /// JSON frames received on the way to the close.
    pub frames: Vec<Value>,
}

impl Closed {
    /// The `disconnect` frame the server sent before closing, if any.
    pub fn disconnect(&self) -> Option<&Value> {
        self.frames.iter().find(|f| f["type"] == "disconnect")
    }
}

pub struct Client {
    ws: Ws,
    pending: VecDeque<Value>,
    next_id: u64,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

impl Client {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8000/ws?token=…`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with_protocols(url, &[]).await
    }

    /// Connects offering the given subprotocols.
    pub async fn connect_with_protocols(url: &str, protocols: &[&str]) -> anyhow::Result<Self> {
        Self::connect_with(url, protocols, None).await
    }

    /// Connects to a `wss://` URL with `tls` (trusting the test's CA).
    pub async fn connect_tls(
        url: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        Self::connect_with(url, &[], Some(Connector::Rustls(tls))).await
    }

    async fn connect_with(
        url: &str,
        protocols: &[&str],
        connector: Option<Connector>,
    ) -> anyhow::Result<Self> {
        let mut req = url.into_client_request()?;
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&protocols.join(", "))?,
            );
        }
        let connect = connect_async_tls_with_config(req, None, false, connector);
        let (ws, resp) = tokio::time::timeout(WAIT, connect)
            .await
            .context("connect timed out")??;
        let protocol = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self {
            ws,
            pending: VecDeque::new(),
            next_id: 1,
            protocol,
        })
    }

    pub async fn send(&mut self, frame: Value) -> anyhow::Result<()> {
        self.send_text(&frame.to_string()).await
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send_message(Message::text(text)).await
    }

    pub async fn send_message(&mut self, msg: Message) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, self.ws.send(msg))
            .await
            .context("send timed out")??;
        Ok(())
    }

    /// The next JSON frame, in arrival order.
    pub async fn next(&mut self) -> anyhow::Result<Value> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        self.read().await
    }

    async fn read(&mut self) -> anyhow::Result<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .context("no frame within the wait")?
                .ok_or_else(|| anyhow!("connection ended"))??;
            match msg {
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .with_context(|| format!("server sent invalid JSON: {text}"));
                }
                Message::Close(frame) => bail!("connection closed: {frame:?}"),
                Message::Binary(_) => bail!("server sent a binary frame"),
                _ => continue,
            }
        }
    }

    /// The next frame that matches `pred`; frames skipped on the way stay
    /// queued for [`Client::next`].
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return Ok(self.pending.remove(i).expect("index is valid"));
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.read())
                .await
                .context("no matching frame within the wait")??;
            if pred(&frame) {
                return Ok(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// Sends `frame` with a fresh numeric `id` and returns the reply with
    /// that id (a `response`, an `error`, a `pong` or `authenticated`).
    pub async fn request(&mut self, mut frame: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.send(frame).await?;
        self.wait_for(|f| f["id"] == json!(id)).await
    }

    /// Like [`Client::request`] but fails unless the reply is a `response`;
    /// returns its `data`.
    pub async fn ok(&mut self, frame: Value) -> anyhow::Result<Value> {
        let reply = self.request(frame.clone()).await?;
        if reply["type"] != "response" {
            bail!("{frame} got {reply}");
        }
        Ok(reply["data"].clone())
    }

    pub async fn subscribe(&mut self, channel: &str) -> anyhow::Result<Value> {
        self.ok(json!({"type": "subscribe", "channel": channel}))
            .await
    }

    pub async fn publish(&mut self, channel: &str, data: Value) -> anyhow::Result<Value> {
        self.ok(json!({"type": "publish", "channel": channel, "data": data}))
            .await
    }

    /// The next `message` frame on `channel`.
    pub async fn message(&mut self, channel: &str) -> anyhow::Result<Value> {
        self.wait_for(|f| f["type"] == "message" && f["channel"] == channel)
            .await
    }

    /// Reads until the server closes; returns the code and what came before.
    pub async fn closed(mut self) -> anyhow::Result<Closed> {
        let mut frames: Vec<Value> = self.pending.drain(..).collect();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("server did not close within the wait")?;
            match next {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text)?),
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                        frames,
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    return Ok(Closed {
                        code: None,
                        reason: String::new(),
                        frames,
                    });
                }
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, self.ws.close(None))
            .await
            .context("close timed out")??;
        Ok(())
    }

    /// The raw stream, for tests that misbehave on purpose.
    pub fn ws(&mut self) -> &mut Ws {
        &mut self.ws
    }
}
