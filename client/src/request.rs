//! Requests in flight and requests waiting for a connection: ids, the
//! deadlines that bound every wait, and who is told about the outcome.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    time::Duration,
};

use serde_json::{Map, Value};
use tokio::{sync::oneshot, time::Instant};

use crate::error::ClientError;

/// Where a request's outcome goes.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A caller waits for the reply's `data`.
    Reply(oneshot::Sender<Result<Value, ClientError>>),
    /// A caller waits until the frame is written (sent without an id, no reply).
    Written(oneshot::Sender<Result<Value, ClientError>>),
    /// The client's own requests, settled by the connection.
    Subscribe {
        channel: String,
        sub: u64,
        was_recovering: bool,
    },
    Unsubscribe,
    Ping,
    Refresh {
        token: String,
    },
}

impl Waiter {
    /// Tells a waiting caller; the client's own requests are settled by the connection.
    pub(crate) fn fail(self, error: ClientError) {
        if let Waiter::Reply(tx) | Waiter::Written(tx) = self {
            let _ = tx.send(Err(error));
        }
    }
}

#[derive(Debug)]
pub(crate) struct Request {
    /// The frame without `id`; taken when sent.
    frame: Option<Map<String, Value>>,
    pub waiter: Waiter,
    deadline: Instant,
    /// The whole time allowed, for the error message.
    pub timeout: Duration,
}

/// Every request, keyed by its id.
#[derive(Debug)]
pub(crate) struct Requests {
    next_id: u64,
    all: HashMap<u64, Request>,
    /// Ids not sent yet, in order.
    queue: VecDeque<u64>,
    deadlines: BTreeSet<(Instant, u64)>,
    max_queued: usize,
}

impl Requests {
    pub(crate) fn new(max_queued: usize) -> Self {
        Self {
            // Id 0 is the `auth` request of each connection.
            next_id: 1,
            all: HashMap::new(),
            queue: VecDeque::new(),
            deadlines: BTreeSet::new(),
            max_queued,
        }
    }

    /// Adds a request; it is queued until [`Requests::take_queued`] hands it out.
    pub(crate) fn queue(
        &mut self,
        frame: Map<String, Value>,
        waiter: Waiter,
        timeout: Duration,
    ) -> Result<(), Waiter> {
        if self.queue.len() >= self.max_queued {
            return Err(waiter);
        }
        let id = self.insert(Some(frame), waiter, timeout);
        self.queue.push_back(id);
        Ok(())
    }

    /// Adds a request being sent now; returns the frame with its id.
    pub(crate) fn send_now(
        &mut self,
        mut frame: Map<String, Value>,
        waiter: Waiter,
        timeout: Duration,
    ) -> (u64, Value) {
        let written = matches!(waiter, Waiter::Written(_));
        let id = self.insert(None, waiter, timeout);
        if !written {
            frame.insert("id".into(), id.into());
        }
        (id, Value::Object(frame))
    }

    fn insert(
        &mut self,
        frame: Option<Map<String, Value>>,
        waiter: Waiter,
        timeout: Duration,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + timeout;
        self.deadlines.insert((deadline, id));
        self.all.insert(
            id,
            Request {
                frame,
                waiter,
                deadline,
                timeout,
            },
        );
        id
    }

    /// The queued requests to send now, in order, with their ids set
    /// (except those sent without one).
    pub(crate) fn take_queued(&mut self) -> Vec<(u64, Value)> {
        let mut out = Vec::with_capacity(self.queue.len());
        while let Some(id) = self.queue.pop_front() {
            let Some(req) = self.all.get_mut(&id) else {
                continue;
            };
            let Some(mut frame) = req.frame.take() else {
                continue;
            };
            if !matches!(req.waiter, Waiter::Written(_)) {
                frame.insert("id".into(), id.into());
            }
            out.push((id, Value::Object(frame)));
        }
        out
    }

    /// Removes the request with `id`, if it is still waited for.
    pub(crate) fn take(&mut self, id: u64) -> Option<Request> {
        let req = self.all.remove(&id)?;
        self.deadlines.remove(&(req.deadline, id));
        Some(req)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Removes the requests whose deadline passed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Request> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(req) = self.all.remove(&id) {
                if req.frame.is_some() {
                    self.queue.retain(|&q| q != id);
                }
                out.push(req);
            }
        }
        out
    }

    /// Removes the requests already sent (their connection is gone); queued
    /// ones stay for the next connection.
    pub(crate) fn take_sent(&mut self) -> Vec<Request> {
        let sent: Vec<u64> = self
            .all
            .iter()
            .filter(|(_, r)| r.frame.is_none())
            .map(|(&id, _)| id)
            .collect();
        sent.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// Removes every request.
    pub(crate) fn take_all(&mut self) -> Vec<Request> {
        self.queue.clear();
        self.deadlines.clear();
        self.all.drain().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".into(), kind.into());
        m
    }

    #[test]
    fn queued_requests_get_ids_in_order_and_expire() {
        let mut r = Requests::new(2);
        r.queue(frame("a"), Waiter::Ping, Duration::from_secs(5))
            .unwrap();
        r.queue(frame("b"), Waiter::Unsubscribe, Duration::from_secs(1))
            .unwrap();
        assert!(
            r.queue(frame("c"), Waiter::Ping, Duration::ZERO).is_err(),
            "bounded"
        );
        let first = r.next_deadline().unwrap();
        assert!(first <= Instant::now() + Duration::from_secs(1));
        let expired = r.expired(first + Duration::from_millis(1));
        assert_eq!(expired.len(), 1);
        let sent = r.take_queued();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1["type"], "a");
        assert_eq!(sent[0].1["id"], sent[0].0);
        assert_eq!(r.take_sent().len(), 1);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn frames_sent_without_reply_have_no_id() {
        let (tx, _rx) = oneshot::channel();
        let mut r = Requests::new(1);
        let (_, sent) = r.send_now(frame("publish"), Waiter::Written(tx), Duration::ZERO);
        assert!(sent.get("id").is_none());
    }
}
