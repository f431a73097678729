//! The WebSocket door at `/app/{key}`: the upgrade, then one task per
//! connection that reads client frames, writes replies and deliveries,
//! keeps the activity timeout, and ends with Pusher's error and close
//! codes.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, Request, State},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt};
use http::{StatusCode, header};
use hyper_util::rt::TokioIo;
use switchboard_core::Broker;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message, Utf8Bytes,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};

use crate::{
    gateway::Gateway,
    handshake,
    hub::{ConnHandle, Outgoing},
    pusher::{
        Apps,
        close::{self, Close},
        frame,
        session::{PusherSession, Reply},
    },
    telemetry,
};

/// Most queued deliveries written before one flush.
const WRITE_BATCH: usize = 64;

/// How long a closing connection waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The state of the door's route.
pub(crate) type DoorState<B> = (Arc<Gateway<B>>, Arc<Apps>);

/// `GET /app/{key}`: upgrades, then serves the app's protocol, or tells
/// the client in Pusher's terms why not (an unknown key, a protocol
/// version, capacity).
pub(crate) async fn upgrade<B: Broker>(
    State((gw, apps)): State<DoorState<B>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    mut req: Request,
) -> Response {
    let accepted = match handshake::check(req.method(), req.uri(), req.headers()) {
        Ok(accepted) => accepted,
        Err(refused) => return (refused.status, format!("{}\n", refused.message)).into_response(),
    };
    if gw.shutdown().is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server is shutting down\n").into_response();
    }
    let admitted = match (
        apps.by_key(&key),
        close::check_protocol(query.get("protocol").map(String::as_str)),
    ) {
        (None, _) => Err(Close::UnknownApp),
        (Some(_), Err(refused)) => Err(refused),
        (Some(app), Ok(())) => match (app.admit(), gw.admit()) {
            (Some(app_slot), Some(slot)) => Ok((app.clone(), app_slot, slot)),
            _ => Err(Close::OverCapacity),
        },
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let config = gw.ws_config();
    let gateway = gw.clone();
    let timers = Timers {
        activity: apps.activity_timeout,
        pong: apps.pong_timeout,
    };
    gw.tracker().spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        match admitted {
            Ok((app, _app_slot, _slot)) => {
                serve(gateway, app.app.clone(), ws, timers).await;
            }
            Err(refused) => {
                close(
                    &mut ws,
                    refused,
                    gateway.settings.gateway.limits.write_timeout,
                )
                .await
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accepted.accept_key)
        .body(axum::body::Body::empty())
        .expect("static response parts are valid")
}

/// The activity timeout told to clients, and the wait for a pinged one.
#[derive(Clone, Copy)]
struct Timers {
    activity: Duration,
    pong: Duration,
}

/// `Some(reason)`: close with it; `Some(None)`: the peer is gone.
type Ended = Option<Option<Close>>;

/// Runs one Pusher connection to its end.
async fn serve<B, S>(
    gateway: Arc<Gateway<B>>,
    app: Arc<crate::config::PusherApp>,
    mut ws: WebSocketStream<S>,
    timers: Timers,
) where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = gateway.settings.gateway.limits.clone();
    let conn = gateway.next_conn_id();
    let (tx, mut rx) = mpsc::channel::<Arc<Outgoing>>(limits.outbound_queue.max(1));
    let stop = gateway.shutdown().child_token();
    let handle = ConnHandle {
        tx,
        overflow: stop.clone(),
    };
    // Pusher's socket ids are two numbers; unique enough across a cluster
    // to key presence by, unguessable enough that nobody names another's.
    let socket_id = format!("{}.{}", rand::random::<u32>(), conn);
    let mut session = PusherSession::new(gateway.clone(), app, conn, socket_id, handle);
    let hello = frame::connection_established(session.socket_id(), timers.activity.as_secs());
    let mut ended = write(&mut ws, Reply::frame(hello), limits.write_timeout).await;

    let mut activity = Activity {
        last_seen: Instant::now(),
        pinged: false,
    };
    let timer = sleep_until(activity.last_seen + timers.activity);
    tokio::pin!(timer);
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    while ended.is_none() {
        ended = tokio::select! {
            biased;
            _ = &mut stopped => Some(Some(if gateway.shutdown().is_cancelled() {
                Close::Shutdown
            } else {
                Close::SlowConsumer
            })),
            msg = ws.next() => {
                Box::pin(on_message(&mut ws, &mut session, msg, &mut activity, limits.write_timeout)).await
            }
            Some(first) = rx.recv() => {
                write_deliveries(&mut ws, &mut session, first, &mut rx, limits.write_timeout).await
            }
            _ = &mut timer => {
                let now = Instant::now();
                match activity.on_timer(now, timers) {
                    Timer::Wait(until) => {
                        timer.as_mut().reset(until);
                        None
                    }
                    Timer::Ping(until) => {
                        timer.as_mut().reset(until);
                        write(&mut ws, Reply::frame(frame::ping()), limits.write_timeout).await
                    }
                    Timer::Close => Some(Some(Close::PongTimeout)),
                }
            }
        };
    }
    if let Some(Some(reason)) = ended {
        Box::pin(close(&mut ws, reason, limits.write_timeout)).await;
    }
    Box::pin(session.close()).await;
}

/// When the client was last heard from, and whether it has been pinged
/// since: the activity timeout as a decision over the time.
struct Activity {
    last_seen: Instant,
    pinged: bool,
}

/// What the activity timer says when it fires.
#[derive(Debug, PartialEq, Eq)]
enum Timer {
    /// The client was heard from since: wait until then.
    Wait(Instant),
    /// Silent for `activity_timeout`: ping it, and wait until then.
    Ping(Instant),
    /// Silent after the ping too.
    Close,
}

impl Activity {
    fn heard(&mut self, now: Instant) {
        self.last_seen = now;
        self.pinged = false;
    }

    fn on_timer(&mut self, now: Instant, timers: Timers) -> Timer {
        let due = self.last_seen + timers.activity;
        if now < due {
            Timer::Wait(due)
        } else if self.pinged {
            Timer::Close
        } else {
            self.pinged = true;
            Timer::Ping(now + timers.pong)
        }
    }
}

/// Handles what the client sent: a frame (answered), the end of the
/// connection, or only a sign of life.
async fn on_message<B, S>(
    ws: &mut WebSocketStream<S>,
    session: &mut PusherSession<B>,
    msg: Option<Result<Message, WsError>>,
    activity: &mut Activity,
    timeout: Duration,
) -> Ended
where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin,
{
    match msg {
        Some(Ok(Message::Text(text))) => {
            activity.heard(Instant::now());
            let reply = Box::pin(session.handle_text(&text)).await;
            write(ws, reply, timeout).await
        }
        Some(Ok(Message::Close(_))) => {
            // tungstenite has queued the close reply; reading on sends it
            // and completes the closing handshake.
            let drain = async { while let Some(Ok(_)) = ws.next().await {} };
            let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
            Some(None)
        }
        None => Some(None),
        Some(Ok(_)) => {
            activity.heard(Instant::now());
            None
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "pusher connection read failed");
            Some(None)
        }
    }
}

async fn write<S>(ws: &mut WebSocketStream<S>, reply: Reply, timeout: Duration) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !reply.frames.is_empty() {
        let n = reply.frames.len() as u64;
        let send = async {
            for f in reply.frames {
                ws.feed(Message::Text(f)).await?;
            }
            ws.flush().await
        };
        match tokio::time::timeout(timeout, send).await {
            Ok(Ok(())) => telemetry::sent(n),
            // A write that fails or hangs: the peer is gone or stuck.
            _ => return Some(None),
        }
    }
    reply.close.map(Some)
}

/// Writes what `first` and the deliveries queued behind it become for this
/// connection, up to [`WRITE_BATCH`], then flushes.
async fn write_deliveries<B, S>(
    ws: &mut WebSocketStream<S>,
    session: &mut PusherSession<B>,
    first: Arc<Outgoing>,
    rx: &mut mpsc::Receiver<Arc<Outgoing>>,
    timeout: Duration,
) -> Ended
where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch = Reply::default();
    let mut next = Some(first);
    while let Some(out) = next.take() {
        let reply = session.deliver(&out);
        batch.frames.extend(reply.frames);
        if reply.close.is_some() {
            batch.close = reply.close;
            break;
        }
        if batch.frames.len() < WRITE_BATCH {
            next = rx.try_recv().ok();
        }
    }
    write(ws, batch, timeout).await
}

/// Sends `pusher:error` with the reason's code, closes with the same code,
/// and waits briefly for the client's close.
async fn close<S>(ws: &mut WebSocketStream<S>, reason: Close, timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    telemetry::disconnect(reason.label());
    let frame = CloseFrame {
        code: CloseCode::from(reason.code()),
        reason: Utf8Bytes::from_static(reason.message()),
    };
    let goodbye = async {
        ws.feed(Message::Text(frame::error(
            Some(reason.code()),
            reason.message(),
        )))
        .await?;
        ws.send(Message::Close(Some(frame))).await
    };
    if !matches!(tokio::time::timeout(timeout, goodbye).await, Ok(Ok(()))) {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_pinged_then_closed() {
        let timers = Timers {
            activity: Duration::from_secs(120),
            pong: Duration::from_secs(30),
        };
        let t0 = Instant::now();
        let mut a = Activity {
            last_seen: t0,
            pinged: false,
        };
        let later = t0 + Duration::from_secs(60);
        a.heard(later);
        // Fired at the first deadline, but the client spoke since.
        let first = t0 + timers.activity;
        assert_eq!(
            a.on_timer(first, timers),
            Timer::Wait(later + timers.activity)
        );
        let silent = later + timers.activity;
        assert_eq!(
            a.on_timer(silent, timers),
            Timer::Ping(silent + timers.pong)
        );
        assert_eq!(a.on_timer(silent + timers.pong, timers), Timer::Close);
        // An answer to the ping starts over.
        a.heard(silent + Duration::from_secs(1));
        assert!(matches!(
            a.on_timer(silent + timers.pong, timers),
            Timer::Wait(_)
        ));
    }
}
