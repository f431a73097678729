//! Opening a connection: the token, the socket and the `auth` exchange,
//! and the task's wait for them, during which commands are still served
//! so that the application is never blocked on a slow server.

use std::{pin::pin, time::Duration};

use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use switchboard_core::frame::RequestFrame;

use rustls::ClientConfig;
use tokio_tungstenite::{
    Connector, connect_async_tls_with_config,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        http::{HeaderValue, header::SEC_WEBSOCKET_PROTOCOL},
    },
};

use super::{Driver, Next, Ws, command::Command, sleep_until_opt};
use crate::{
    advice::{Advice, advise, close_code},
    error::ClientError,
    event::ClientEvent,
    frame::{self, ServerFrame},
    token::TokenSource,
};

/// The id of each connection's `auth` request; other requests count from 1.
const AUTH_ID: u64 = 0;

/// The batching subprotocol, offered before the plain one: a server that
/// does not know it selects `switchboard`.
const BATCH_PROTOCOL: &str = "switchboard.batch";
const OFFER_BATCH: &str = "switchboard.batch, switchboard";

/// Why opening a connection failed.
enum Failure {
    Token(String),
    Closed {
        advice: Advice,
        refused: Option<ClientError>,
    },
    /// Waiting cannot help (a malformed URL, `wss://` without TLS support).
    Fatal(String),
}

pub(super) struct Opened {
    pub(super) ws: Ws,
    pub(super) token: Option<String>,
    /// `(client_id, user_id)` from `authenticated`; `None` when anonymous.
    pub(super) identity: Option<(String, String)>,
    /// The server chose `switchboard.batch`.
    pub(super) batch: bool,
    /// Messages that came in the same frame as `authenticated`, after it.
    pub(super) early: Vec<String>,
}

impl Driver {
    /// Opens and authenticates a connection, serving commands meanwhile.
    pub(super) async fn attempt(&mut self) -> Next {
        self.generation += 1;
        let open = open(
            self.url.clone(),
            self.token_source.clone(),
            self.opts.connect_timeout,
            self.tls.clone(),
            self.opts.batch,
        );
        let mut open = pin!(tokio::time::timeout(self.opts.connect_timeout, open));
        loop {
            let deadline = self.requests.next_deadline();
            tokio::select! {
                opened = &mut open => {
                    return match opened {
                        Ok(Ok(opened)) => self.serve(opened).await,
                        Ok(Err(Failure::Token(why))) => {
                            self.emit(ClientEvent::Error(ClientError::Token(why.clone())));
                            self.lost(Advice::retry(close_code::TOKEN_UNAVAILABLE, &why))
                        }
                        Ok(Err(Failure::Closed { advice, refused })) => {
                            if let Some(e) = refused {
                                self.emit(ClientEvent::Error(e));
                            }
                            self.lost(advice)
                        }
                        Ok(Err(Failure::Fatal(why))) => self.end(close_code::TRANSPORT_CLOSED, &why),
                        Err(_) => self.lost(Advice::retry(close_code::CONNECT_TIMEOUT, "connect timeout")),
                    };
                }
                cmd = self.commands.recv() => match cmd {
                    None => return Next::Exit,
                    Some(Command::Reconnect { done }) => {
                        // Already connecting.
                        let _ = done.send(());
                    }
                    Some(cmd) => {
                        if let Some(next) = self.command_offline(cmd, false) {
                            return next;
                        }
                    }
                },
                _ = sleep_until_opt(deadline) => self.expire(),
            }
        }
    }
}

/// Fetches a token, opens the socket and authenticates.
async fn open(
    url: String,
    source: TokenSource,
    timeout: Duration,
    tls: Arc<ClientConfig>,
    offer_batch: bool,
) -> Result<Opened, Failure> {
    let token = match source {
        TokenSource::Anonymous => None,
        TokenSource::Fixed(token) => Some(token),
        TokenSource::Provider(provider) => match provider().await {
            Ok(token) if !token.is_empty() => Some(token),
            Ok(_) => return Err(Failure::Token("the provider returned no token".into())),
            Err(e) => return Err(Failure::Token(e.to_string())),
        },
    };
    // The connector applies to `wss://` only; `ws://` stays plain.
    let connector = Some(Connector::Rustls(tls));
    let failed = |e| match e {
        tungstenite::Error::Url(why) => Failure::Fatal(format!("cannot connect to {url}: {why}")),
        other => Failure::Closed {
            advice: Advice::retry(close_code::ABNORMAL, &other.to_string()),
            refused: None,
        },
    };
    let mut request = url.as_str().into_client_request().map_err(failed)?;
    if offer_batch {
        request.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(OFFER_BATCH),
        );
    }
    let connected = connect_async_tls_with_config(request, None, false, connector).await;
    let (mut ws, response) = connected.map_err(failed)?;
    let batch = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .is_some_and(|p| p == BATCH_PROTOCOL);
    let (identity, early) = match &token {
        None => (None, Vec::new()),
        Some(token) => {
            let (identity, early) = authenticate(&mut ws, token, timeout, batch).await?;
            (Some(identity), early)
        }
    };
    Ok(Opened {
        ws,
        token,
        identity,
        batch,
        early,
    })
}

/// The messages of one text frame: the frame, or its non-blank lines
/// when batched.
pub(super) fn messages(text: &str, batch: bool) -> impl Iterator<Item = &str> {
    let whole = (!batch).then_some(text);
    let lines = batch
        .then(|| text.split('\n'))
        .into_iter()
        .flatten()
        .filter(|l| !l.trim().is_empty());
    whole.into_iter().chain(lines)
}

/// Sends `auth` and reads to its answer: `authenticated` (with what
/// followed it in its frame), or a refusal followed by the server's
/// `disconnect` and close.
async fn authenticate(
    ws: &mut Ws,
    token: &str,
    timeout: Duration,
    batch: bool,
) -> Result<((String, String), Vec<String>), Failure> {
    let auth: RequestFrame<'_, ()> = RequestFrame::Auth { token };
    let auth = auth.encode_with_id(AUTH_ID);
    let lost = |why: &str| Failure::Closed {
        advice: Advice::retry(close_code::ABNORMAL, why),
        refused: None,
    };
    tokio::time::timeout(timeout, ws.send(Message::text(auth)))
        .await
        .map_err(|_| lost("auth not sent"))?
        .map_err(|e| lost(&e.to_string()))?;
    let mut refused = None;
    let mut disconnect = None;
    loop {
        let (code, reason) = match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let mut lines = messages(&text, batch);
                for line in lines.by_ref() {
                    match frame::parse(line) {
                        Ok(ServerFrame::Authenticated {
                            id: Some(AUTH_ID),
                            user_id,
                            client_id,
                        }) => {
                            let early = lines.map(str::to_owned).collect();
                            return Ok(((client_id, user_id), early));
                        }
                        Ok(ServerFrame::Error {
                            id: Some(AUTH_ID),
                            error,
                            code,
                        }) => {
                            refused = Some(ClientError::Server {
                                code,
                                message: error,
                            })
                        }
                        Ok(ServerFrame::Disconnect(d)) => disconnect = Some(d),
                        _ => {}
                    }
                }
                continue;
            }
            Some(Ok(Message::Close(frame))) => frame
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((1005, String::new())),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => (close_code::ABNORMAL, "connection lost".to_owned()),
        };
        return Err(Failure::Closed {
            advice: advise(disconnect.as_ref(), code, &reason),
            refused,
        });
    }
}
