//! The inbox: each frame the server sends, handed to the subscription it
//! is for, to the request it answers, or to the application's events; and
//! requests whose time ran out, which get the answer "timeout" instead.

use serde_json::Value;
use switchboard_core::frame::push::Event;
use tokio::time::Instant;

use super::Driver;
use crate::{
    advice::{Advice, close_code},
    error::ClientError,
    event::ClientEvent,
    frame::{self, Publication, ServerFrame},
    request::Waiter,
    subscription::{Delivery, Entry, SubscriptionEvent},
    token::expiry,
};

impl Driver {
    pub(super) fn on_frame(&mut self, text: &str, generation: u64) {
        let frame = match frame::parse(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.emit(ClientEvent::Error(ClientError::Protocol(format!(
                    "invalid frame from the server: {e}"
                ))));
                return;
            }
        };
        match frame {
            ServerFrame::Message(p) => self.on_publication(p),
            ServerFrame::Join(Event { channel, info }) => {
                self.deliver(&channel, |e| e.presence(SubscriptionEvent::Join(info)))
            }
            ServerFrame::Leave(Event { channel, info }) => {
                self.deliver(&channel, |e| e.presence(SubscriptionEvent::Leave(info)))
            }
            ServerFrame::Disconnect(d) => self.disconnect = Some(d),
            ServerFrame::Response { id: Some(id), data } => self.settle(id, Ok(data), generation),
            ServerFrame::Pong { id: Some(id) }
            | ServerFrame::Authenticated { id: Some(id), .. } => {
                self.settle(id, Ok(Value::Null), generation)
            }
            ServerFrame::Error {
                id: Some(id),
                error,
                code,
            } => self.settle(
                id,
                Err(ClientError::Server {
                    code,
                    message: error,
                }),
                generation,
            ),
            ServerFrame::Error {
                id: None,
                error,
                code,
            } => self.emit(ClientEvent::Error(ClientError::Server {
                code,
                message: error,
            })),
            _ => {}
        }
    }

    fn on_publication(&mut self, p: Publication) {
        if self.subs.contains_key(&p.channel) {
            let channel = p.channel.clone();
            self.deliver(&channel, |e| e.message(p));
        } else {
            // The personal channel, which the server subscribed by itself.
            self.emit(ClientEvent::Message(p));
        }
    }

    /// Hands an event to a subscription; one whose handle is gone is removed.
    pub(super) fn deliver(&mut self, channel: &str, f: impl FnOnce(&mut Entry) -> Delivery) {
        let Some(entry) = self.subs.get_mut(channel) else {
            return;
        };
        if f(entry) == Delivery::Gone {
            self.subs.remove(channel);
            self.send_unsubscribe(channel);
        }
    }

    /// A reply to request `id`.
    fn settle(&mut self, id: u64, result: Result<Value, ClientError>, generation: u64) {
        let Some(req) = self.requests.take(id) else {
            return;
        };
        match req.waiter {
            Waiter::Reply(tx) | Waiter::Written(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Subscribe {
                channel,
                sub,
                was_recovering,
            } => self.subscribe_reply(&channel, sub, was_recovering, result, generation),
            Waiter::Unsubscribe => {}
            Waiter::Ping => self.pinging = false,
            Waiter::Refresh { token } => match result {
                Ok(_) => {
                    self.emit(ClientEvent::Refreshed {
                        expires_at: expiry(&token),
                    });
                    self.token = Some(token);
                    self.refresh_at = self.refresh_time();
                }
                Err(e) => self.refresh_failed(e),
            },
        }
    }

    /// Requests whose time is up.
    pub(super) fn expire(&mut self) {
        for req in self.requests.expired(Instant::now()) {
            match req.waiter {
                Waiter::Reply(tx) | Waiter::Written(tx) => {
                    let _ = tx.send(Err(ClientError::Timeout(req.timeout)));
                }
                Waiter::Subscribe { .. } => {
                    // The server may yet subscribe us; only a new connection
                    // makes the state certain again.
                    self.abandon.get_or_insert_with(|| {
                        Advice::retry(close_code::SUBSCRIBE_TIMEOUT, "subscribe timeout")
                    });
                }
                Waiter::Ping => {
                    self.abandon
                        .get_or_insert_with(|| Advice::retry(close_code::NO_PONG, "no pong"));
                }
                Waiter::Refresh { .. } => self.refresh_failed(ClientError::Timeout(req.timeout)),
                Waiter::Unsubscribe => {}
            }
        }
    }
}
