//! What the application asks of the connection task, and how the task
//! carries it out with and without a connection: the same command means
//! queueing while offline and sending at once while connected.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::{Driver, Next};
use crate::{
    advice::{Advice, close_code},
    error::ClientError,
    event::{ClientEvent, State},
    request::Waiter,
    subscription::{SubscribeOptions, SubscriptionEvent},
};

/// What the application asks of the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Request {
        frame: Map<String, Value>,
        waiter: Waiter,
        timeout: Duration,
    },
    Subscribe {
        channel: String,
        options: SubscribeOptions,
        tx: mpsc::Sender<SubscriptionEvent>,
        reply: oneshot::Sender<Result<u64, ClientError>>,
    },
    Unsubscribe {
        channel: String,
        sub: u64,
        done: Option<oneshot::Sender<()>>,
    },
    Reconnect {
        done: oneshot::Sender<()>,
    },
    Disconnect {
        done: oneshot::Sender<()>,
    },
}

impl Driver {
    /// A command while there is no connection; `Some` changes what the task does.
    pub(super) fn command_offline(&mut self, cmd: Command, stopped: bool) -> Option<Next> {
        match cmd {
            Command::Request {
                frame,
                waiter,
                timeout,
            } => {
                if stopped {
                    waiter.fail(ClientError::Closed);
                } else if let Err(waiter) = self.requests.queue(frame, waiter, timeout) {
                    waiter.fail(ClientError::QueueFull);
                }
                None
            }
            Command::Subscribe {
                channel,
                options,
                tx,
                reply,
            } => {
                let _ = reply.send(self.add_subscription(channel, options, tx));
                None
            }
            Command::Unsubscribe { channel, sub, done } => {
                self.remove_subscription(&channel, sub);
                if let Some(done) = done {
                    let _ = done.send(());
                }
                None
            }
            Command::Reconnect { done } => {
                let _ = done.send(());
                if stopped {
                    self.backoff.reset();
                    self.set_state(State::Connecting);
                    self.emit(ClientEvent::Connecting {
                        code: 0,
                        reason: "reconnect called".into(),
                        attempt: 0,
                        delay: Duration::ZERO,
                    });
                }
                Some(Next::Connect)
            }
            Command::Disconnect { done } => {
                let next = if stopped {
                    Next::Stop
                } else {
                    self.end(close_code::DISCONNECT_CALLED, "disconnect called")
                };
                let _ = done.send(());
                Some(next)
            }
        }
    }

    pub(super) fn command_online(&mut self, cmd: Command, generation: u64) {
        match cmd {
            Command::Request {
                frame,
                waiter,
                timeout,
            } => {
                let written = matches!(waiter, Waiter::Written(_));
                let (id, frame) = self.requests.send_now(frame, waiter, timeout);
                self.outbox.push((written.then_some(id), frame));
            }
            Command::Subscribe {
                channel,
                options,
                tx,
                reply,
            } => {
                let added = self.add_subscription(channel.clone(), options, tx);
                let ok = added.is_ok();
                let _ = reply.send(added);
                if ok {
                    self.send_subscribe(&channel);
                }
            }
            Command::Unsubscribe { channel, sub, done } => {
                if let Some(entry) = self.remove_subscription(&channel, sub)
                    && (entry.subscribed || entry.pending_on == Some(generation))
                {
                    self.send_unsubscribe(&channel);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::Reconnect { done } => {
                self.abandon = Some(Advice::retry(
                    close_code::RECONNECT_CALLED,
                    "reconnect called",
                ));
                let _ = done.send(());
            }
            Command::Disconnect { done } => self.stopping = Some(done),
        }
    }
}
