//! The connection task: owns one client's WebSocket and drives its
//! [`Session`]. It reads requests, writes replies and queued deliveries
//! (several per socket write, and several per frame when the client chose
//! batched frames: [`Framing`]), pings, and ends the connection with a
//! `disconnect` frame and a close code when a limit or the server says so.

use std::{
    pin::pin,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::{SinkExt, StreamExt};
use switchboard_core::{Broker, Control, DeliveryKind};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
    time::{Instant, MissedTickBehavior, sleep_until},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message, Utf8Bytes,
        error::{CapacityError, ProtocolError},
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{AuthError, Identity},
    config::Limits,
    error::Disconnect,
    gateway::Gateway,
    hub::Outgoing,
    outbox::{Framing, Outbox},
    session::{Session, Step},
    telemetry,
};

/// Most queued deliveries written before one flush.
const WRITE_BATCH: usize = 64;

/// How long a closing connection waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A time far enough away to stand for "never".
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

/// Runs one connection to its end.
pub async fn serve<B, S>(
    gateway: Arc<Gateway<B>>,
    mut ws: WebSocketStream<S>,
    framing: Framing,
    token: Option<Result<Identity, AuthError>>,
    shutdown: CancellationToken,
) where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Borrowed, not cloned: a copy would sit in every connection's task.
    let limits = &gateway.settings.gateway.limits;
    let conn = gateway.next_conn_id();
    // One token per connection, cancelled by the server's shutdown or by
    // the hub when the queue overflows. Waiting on the server's own token
    // would make every connection take that token's one lock each time
    // it wakes up; a child token's lock is this connection's alone.
    let stop = shutdown.child_token();
    let mut session = Session::new(gateway.clone(), conn, client_id(conn), stop.clone());
    // The outbound queue, made by the session at the first subscription.
    let mut rx: Option<mpsc::Receiver<Arc<Outgoing>>> = None;

    let mut last_seen = Instant::now();
    let mut ping =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let auth_deadline = Instant::now() + limits.auth_timeout;
    // One timer for the connection's deadline: the auth timeout while it
    // waits for `auth`, then its token's expiry (never both: one timer
    // less in every connection's task).
    let mut deadline = pin!(sleep_until(auth_deadline));
    let mut watched = (true, None);

    // Created once: a fresh one per wake-up would register and deregister
    // a waiter (two lock round trips) every time.
    let mut stopped = pin!(stop.cancelled());

    // The task lives as long as the connection and is the size of its
    // largest state: requests (in a cluster, gRPC calls) and the loop's
    // arms (a write with its timeout) are boxed while they run rather
    // than held in every idle connection, one allocation per busy wake-up.
    let step = Box::pin(session.start(token)).await;
    let mut ended = Box::pin(write_step(&mut ws, step, framing, limits.write_timeout)).await;

    while ended.is_none() {
        if rx.is_none() {
            rx = session.take_queue();
        }
        rearm(deadline.as_mut(), &mut watched, &session, auth_deadline);
        ended = tokio::select! {
            biased;
            _ = &mut stopped => Some(Some(if shutdown.is_cancelled() {
                Disconnect::Shutdown
            } else {
                Disconnect::SlowConsumer
            })),
            _ = &mut deadline => Some(Some(deadline_passed(watched.0))),
            msg = ws.next(), if session.reading() => {
                last_seen = Instant::now();
                Box::pin(on_message(&mut ws, &mut session, &mut rx, msg, framing, limits.write_timeout)).await
            }
            // Answers as requests end, in any order (session::pipeline).
            step = session.completed(), if session.in_flight() => {
                Box::pin(write_step(&mut ws, step, framing, limits.write_timeout)).await
            }
            Some((first, rx)) = next_queued(&mut rx) => {
                Box::pin(write_deliveries(&mut ws, &mut session, first, rx, framing, limits.write_timeout)).await
            }
            _ = ping.tick() => Box::pin(on_ping_tick(&mut ws, last_seen, limits)).await,
        };
    }

    if let Some(Some(reason)) = ended {
        Box::pin(close(&mut ws, reason, limits.write_timeout)).await;
    }
    Box::pin(session.close()).await;
}

/// The next queued delivery, with the queue; never, while there is none.
async fn next_queued(
    rx: &mut Option<mpsc::Receiver<Arc<Outgoing>>>,
) -> Option<(Arc<Outgoing>, &mut mpsc::Receiver<Arc<Outgoing>>)> {
    match rx {
        Some(rx) => Some((rx.recv().await?, rx)),
        None => std::future::pending().await,
    }
}

/// Points the connection's one deadline at what it now waits for: the auth
/// timeout while `auth` is awaited, then the token's expiry.
fn rearm<B: Broker>(
    deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    watched: &mut (bool, Option<SystemTime>),
    session: &Session<B>,
    auth_deadline: Instant,
) {
    let watching = (session.awaiting_auth(), session.expires_at());
    if watching != *watched {
        *watched = watching;
        deadline.reset(match watching {
            (true, _) => auth_deadline,
            (false, expires_at) => expires_at.map_or_else(far_future, instant_of),
        });
    }
}

/// Why the connection's one deadline ended it: still waiting for `auth`,
/// or the token expired.
fn deadline_passed(awaiting_auth: bool) -> Disconnect {
    if awaiting_auth {
        Disconnect::AuthTimeout
    } else {
        Disconnect::TokenExpired
    }
}

/// Handles what the client sent: a request (answered, with what it caused
/// right behind the reply), the end of the connection, or only a sign of
/// life. Kept out of [`serve`]'s loop so that the loop reads as the list of
/// things a connection waits for.
async fn on_message<B, S>(
    ws: &mut WebSocketStream<S>,
    session: &mut Session<B>,
    rx: &mut Option<mpsc::Receiver<Arc<Outgoing>>>,
    msg: Option<Result<Message, WsError>>,
    framing: Framing,
    timeout: Duration,
) -> Ended
where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin,
{
    match msg {
        Some(Ok(Message::Text(text))) => {
            let Ok(requests) = framing.requests(&text) else {
                return Some(Some(Disconnect::TooManyRequests));
            };
            let step = answer(session, requests).await;
            let ended = write_step(ws, step, framing, timeout).await;
            if rx.is_none() {
                *rx = session.take_queue();
            }
            // What the request caused (a join, the publication
            // itself) goes out right behind its reply.
            match rx.as_mut().map(mpsc::Receiver::try_recv) {
                Some(Ok(first)) if ended.is_none() => {
                    let rx = rx.as_mut().expect("a delivery came from it");
                    write_deliveries(ws, session, first, rx, framing, timeout).await
                }
                _ => ended,
            }
        }
        Some(Ok(Message::Binary(_))) => Some(Some(Disconnect::BinaryFrame)),
        Some(Ok(Message::Close(_))) => {
            // tungstenite has queued the close reply; reading on
            // sends it and completes the closing handshake.
            let drain = async { while let Some(Ok(_)) = ws.next().await {} };
            let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
            Some(None)
        }
        None => Some(None),
        Some(Ok(_)) => None, // ping, pong, raw frames: liveness only
        Some(Err(e)) => Some(read_error(&e)),
    }
}

/// Handles the requests of one client frame in order, each as if sent
/// alone, and gathers their replies for one write; a request that ends
/// the connection ends the frame too.
async fn answer<B: Broker>(session: &mut Session<B>, requests: Vec<&str>) -> Step {
    let mut all = Step {
        frames: Vec::new(),
        close: None,
    };
    for request in requests {
        let step = Box::pin(session.handle_text(request)).await;
        if all.frames.is_empty() {
            all.frames = step.frames;
        } else {
            all.frames.extend(step.frames);
        }
        if step.close.is_some() {
            all.close = step.close;
            break;
        }
    }
    all
}

/// A silent client past `idle_timeout` is gone; otherwise it is pinged, so
/// that a half-open connection shows up as a failed or slow write.
async fn on_ping_tick<S>(ws: &mut WebSocketStream<S>, last_seen: Instant, limits: &Limits) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if last_seen.elapsed() >= limits.idle_timeout {
        return Some(Some(Disconnect::IdleTimeout));
    }
    match tokio::time::timeout(
        limits.write_timeout,
        ws.send(Message::Ping(Default::default())),
    )
    .await
    {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(None),
        Err(_) => Some(Some(Disconnect::WriteTimeout)),
    }
}

/// The client id: unique per gateway process and unguessable enough that a
/// client cannot name another's.
fn client_id(conn: u64) -> String {
    format!("{:08x}{:08x}", rand::random::<u32>(), conn as u32)
}

fn instant_of(at: SystemTime) -> Instant {
    let now_sys = SystemTime::now();
    let now = Instant::now();
    match at.duration_since(now_sys) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

/// `Some(reason)` ends the connection; `Some(None)` ends it without a
/// close frame (the peer is gone); `None` carries on.
type Ended = Option<Option<Disconnect>>;

fn read_error(e: &WsError) -> Option<Disconnect> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some(Disconnect::MessageTooBig),
        WsError::Utf8(_) => Some(Disconnect::InvalidUtf8),
        WsError::Protocol(
            ProtocolError::InvalidCloseSequence | ProtocolError::ResetWithoutClosingHandshake,
        ) => None,
        WsError::Protocol(_) => {
            tracing::debug!(error = %e, "protocol error from client");
            None
        }
        _ => None,
    }
}

async fn write_step<S>(
    ws: &mut WebSocketStream<S>,
    step: Step,
    framing: Framing,
    timeout: Duration,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !step.frames.is_empty() {
        let n = step.frames.len() as u64;
        let write = async {
            let mut outbox = Outbox::new(framing);
            for frame in step.frames {
                outbox.push(ws, frame).await?;
            }
            outbox.finish(ws).await?;
            ws.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => telemetry::sent(n),
            Ok(Err(_)) => return Some(None),
            Err(_) => return Some(Some(Disconnect::WriteTimeout)),
        }
    }
    step.close.map(Some)
}

/// Writes queued deliveries, starting with `first`, and applies control
/// commands in their place in the queue.
async fn write_deliveries<B, S>(
    ws: &mut WebSocketStream<S>,
    session: &mut Session<B>,
    first: Arc<Outgoing>,
    rx: &mut mpsc::Receiver<Arc<Outgoing>>,
    framing: Framing,
    timeout: Duration,
) -> Ended
where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = Some(first);
    while let Some(out) = next.take() {
        if out.kind == DeliveryKind::Control {
            let ended = Box::pin(apply_control(ws, session, &out, framing, timeout)).await;
            if ended.is_some() {
                return ended;
            }
            next = rx.try_recv().ok();
            continue;
        }
        let (ended, control) = write_batch(ws, session, out, rx, framing, timeout).await;
        if ended.is_some() {
            return ended;
        }
        next = control;
    }
    None
}

/// Applies a command a backend sent to this connection's user (server API).
async fn apply_control<B, S>(
    ws: &mut WebSocketStream<S>,
    session: &mut Session<B>,
    out: &Outgoing,
    framing: Framing,
    timeout: Duration,
) -> Ended
where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin,
{
    match Control::decode(out.text.as_str().as_bytes()) {
        Ok(Control::Disconnect {
            code,
            reason,
            reconnect,
        }) => Some(Some(Disconnect::requested(code, &reason, reconnect))),
        Ok(Control::Unsubscribe { channel }) => match session.server_unsubscribe(&channel).await {
            Some(notice) => {
                let step = Step {
                    frames: vec![notice],
                    close: None,
                };
                write_step(ws, step, framing, timeout).await
            }
            None => None,
        },
        // The router acts on it; it never reaches a connection.
        Ok(Control::Resubscribe) => None,
        Err(e) => {
            // A newer owner may send commands this gateway does not know:
            // ignoring them is safer than dropping the connection.
            tracing::warn!(channel = %out.channel, error = %e, "unknown control command ignored");
            None
        }
    }
}

/// Writes `first` and what follows it in the queue, up to [`WRITE_BATCH`]
/// frames, then flushes. Stops before a control command and returns it.
async fn write_batch<B, S>(
    ws: &mut WebSocketStream<S>,
    session: &mut Session<B>,
    first: Arc<Outgoing>,
    rx: &mut mpsc::Receiver<Arc<Outgoing>>,
    framing: Framing,
    timeout: Duration,
) -> (Ended, Option<Arc<Outgoing>>)
where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut control = None;
    // One clock reading for the batch: its frames go out in the same write.
    let now = now_micros();
    let write = async {
        let mut outbox = Outbox::new(framing);
        let mut sent = 0u64;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            if out.kind == DeliveryKind::Control {
                control = Some(out);
                break;
            }
            if session.accept(&out) {
                outbox.push(ws, out.text.clone()).await?;
                sent += 1;
                record_latency(&out, now);
            }
            if sent < WRITE_BATCH as u64 {
                next = rx.try_recv().ok();
            }
        }
        outbox.finish(ws).await?;
        ws.flush().await?;
        Ok::<u64, WsError>(sent)
    };
    let ended = match tokio::time::timeout(timeout, write).await {
        Ok(Ok(sent)) => {
            telemetry::sent(sent);
            None
        }
        Ok(Err(_)) => Some(None),
        Err(_) => Some(Some(Disconnect::WriteTimeout)),
    };
    (ended, control)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn record_latency(out: &Outgoing, now_micros: u64) {
    let micros = now_micros.saturating_sub(out.published_at_micros);
    telemetry::delivery_latency(micros as f64 / 1e6);
}

/// Sends `disconnect`, then a close frame, then waits briefly for the
/// client's close so the frames are not lost to a reset. A client that is
/// behind (a slow consumer) gets up to `write_timeout` to read up to them.
async fn close<S>(ws: &mut WebSocketStream<S>, reason: Disconnect, write_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    telemetry::disconnect(reason.label());
    tracing::debug!(
        code = reason.code(),
        reason = reason.reason(),
        "closing connection"
    );
    let frame = CloseFrame {
        code: CloseCode::from(reason.code()),
        reason: Utf8Bytes::from(reason.reason().to_owned()),
    };
    let goodbye = async {
        ws.feed(Message::Text(reason.frame())).await?;
        ws.send(Message::Close(Some(frame))).await
    };
    if reason == Disconnect::WriteTimeout
        || !matches!(
            tokio::time::timeout(write_timeout, goodbye).await,
            Ok(Ok(()))
        )
    {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}
