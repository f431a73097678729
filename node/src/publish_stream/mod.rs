//! A gateway's publish stream as the broker serves it (`PublishStream`):
//! the calls of one long-lived stream, each applied as a unary `Publish`
//! would be ([`Publisher`]) and answered by id as it ends, whatever is
//! ready sent as one message.
//!
//! One task per stream reads the calls and runs them side by side, one at
//! a time per channel in the order read ([`lanes::Lanes`]): no task per
//! call, and no reordering of a channel's publishes. Each call read takes
//! one of [`IN_FLIGHT`] places, given back when its answer leaves; with
//! none free the stream is not read, and the gateway's writes wait on the
//! connection's flow control instead of queueing here.
//!
//! - `lanes`: a stream's calls by channel (sans-IO).

pub mod lanes;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt, stream::FuturesUnordered};
use switchboard_proto::broker::v1 as pb;
use tokio::{
    sync::mpsc::{self, OwnedPermit},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Status, Streaming};

use self::lanes::Lanes;
use crate::{LocalBroker, handoff::Handoff};
use switchboard_cluster::{bundle::Bundles, wire};
use switchboard_core::{Broker, Position};

/// Most calls of one stream read and not yet answered.
pub const IN_FLIGHT: usize = 1024;
/// Most answers in one stream message (an answer is a few dozen bytes).
const BUNDLE_MAX: usize = 256;

/// How this broker applies one publish, from the unary call or a stream.
pub struct Publisher {
    broker: LocalBroker,
    /// In a cluster: which channels this broker serves.
    handoff: Option<Arc<Handoff>>,
}

impl Publisher {
    pub fn new(broker: LocalBroker, handoff: Option<Arc<Handoff>>) -> Self {
        Self { broker, handoff }
    }

    /// Applies `req`, routed by ring version `ring`: refused if this
    /// broker does not own its channel, which it takes over first if it
    /// owns it but does not hold it yet.
    pub async fn publish(
        &self,
        req: pb::PublishRequest,
        ring: Option<u64>,
    ) -> Result<Position, Status> {
        let req = wire::publish_from_pb(req)?;
        if let Some(handoff) = &self.handoff {
            handoff
                .admit(&req.channel, ring)
                .await
                .map_err(wire::status)?;
        }
        self.broker.publish(req).await.map_err(wire::status)
    }
}

/// The answers of one stream, as the gRPC server sends them.
pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<pb::PublishAnswers, Status>> + Send>>;

/// Serves the stream of `calls`: its task runs in `tasks`; at `shutdown`
/// it stops reading and ends once the calls already running have.
pub fn serve(
    calls: Streaming<pb::PublishCalls>,
    publisher: Arc<Publisher>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> AnswerStream {
    let (answers, ready) = mpsc::channel(IN_FLIGHT);
    tasks.spawn(
        Calls {
            publisher,
            answers,
            lanes: Lanes::default(),
            running: FuturesUnordered::new(),
            read: Vec::new().into(),
        }
        .run(calls, shutdown),
    );
    Box::pin(
        Bundles::new(ready, BUNDLE_MAX, usize::MAX, |_| 0)
            .map(|answers| Ok(pb::PublishAnswers { answers })),
    )
}

/// A call's place, taken when it is read and given back with its answer.
type Place = OwnedPermit<pb::PublishAnswer>;

/// A call ended: its lane, and its answer to send in its place.
struct Ended {
    lane: String,
    answer: pb::PublishAnswer,
    place: Place,
}

type Running = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// A call with its place, and when its caller stops waiting for it (from
/// when it was read, as a unary call's `grpc-timeout` runs from when the
/// server reads its headers).
struct Admitted {
    call: pb::PublishCall,
    place: Place,
    deadline: Option<Instant>,
}

/// One stream's calls.
struct Calls {
    publisher: Arc<Publisher>,
    answers: mpsc::Sender<pb::PublishAnswer>,
    lanes: Lanes<String, Admitted>,
    running: FuturesUnordered<Running>,
    /// Calls read that have no place yet.
    read: std::collections::VecDeque<pb::PublishCall>,
}

impl Calls {
    async fn run(mut self, mut calls: Streaming<pb::PublishCalls>, shutdown: CancellationToken) {
        let mut reading = true;
        let mut stopping = false;
        while reading || !self.read.is_empty() || !self.lanes.is_empty() {
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !stopping => {
                    // Calls not started are not applied: the gateway sees
                    // the stream end, as for calls a stopping server
                    // never read.
                    stopping = true;
                    reading = false;
                    self.read.clear();
                    self.lanes.drop_waiting();
                }
                Some(ended) = self.running.next(), if !self.running.is_empty() => {
                    ended.place.send(ended.answer);
                    if let Some(next) = self.lanes.finished(&ended.lane) {
                        self.start(ended.lane, next);
                    }
                }
                place = self.answers.clone().reserve_owned(), if !self.read.is_empty() => {
                    // Nobody reads the answers any more: the stream is gone.
                    let Ok(place) = place else { return };
                    let call = self.read.pop_front().expect("a call was read");
                    self.admit(call, place);
                }
                bundle = calls.message(), if reading && self.read.is_empty() => match bundle {
                    Ok(Some(bundle)) => self.read.extend(bundle.calls),
                    Ok(None) => reading = false,
                    Err(status) => {
                        tracing::debug!(error = %status, "publish stream broke");
                        reading = false;
                    }
                },
            }
        }
    }

    /// Runs `call` now, or behind its channel's running call.
    fn admit(&mut self, call: pb::PublishCall, place: Place) {
        let lane = call
            .request
            .as_ref()
            .map(|r| r.channel.clone())
            .unwrap_or_default();
        let deadline = (call.timeout_millis != 0)
            .then(|| Instant::now() + Duration::from_millis(call.timeout_millis.into()));
        let admitted = Admitted {
            call,
            place,
            deadline,
        };
        if let Some(now) = self.lanes.admit(lane.clone(), admitted) {
            self.start(lane, now);
        }
    }

    fn start(&mut self, lane: String, admitted: Admitted) {
        let publisher = self.publisher.clone();
        let Admitted {
            call,
            place,
            deadline,
        } = admitted;
        self.running.push(Box::pin(async move {
            let id = call.id;
            let outcome = apply(&publisher, call, deadline).await;
            Ended {
                lane,
                answer: wire::publish_answer_to_pb(id, outcome),
                place,
            }
        }));
    }
}

/// Applies one call unless its `deadline` passes first.
async fn apply(
    publisher: &Publisher,
    call: pb::PublishCall,
    deadline: Option<Instant>,
) -> Result<Position, Status> {
    let Some(request) = call.request else {
        return Err(Status::invalid_argument("publish call without a request"));
    };
    let ring = (call.ring != 0).then_some(call.ring);
    let publish = publisher.publish(request, ring);
    let Some(deadline) = deadline else {
        return publish.await;
    };
    // What tonic answers a unary call whose `grpc-timeout` passed.
    tokio::time::timeout_at(deadline, publish)
        .await
        .unwrap_or_else(|_| Err(Status::cancelled("Timeout expired")))
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use futures_util::future::join_all;
    use serde_json::value::RawValue;
    use tokio::net::TcpListener;

    use super::*;
    use crate::{BrokerConfig, server};
    use switchboard_cluster::{RemoteBroker, dialer::TcpDialer};
    use switchboard_core::{BrokerAddr, BrokerError, ChannelName, Namespaces, PublishRequest};

    fn publish(channel: &str, n: u64, key: Option<&str>) -> PublishRequest {
        PublishRequest {
            channel: ChannelName::new(channel).unwrap(),
            from: "u".into(),
            data: RawValue::from_string(n.to_string()).unwrap(),
            idempotency_key: key.map(str::to_owned),
        }
    }

    /// A broker served over TCP at `addr` (any port if `None`), until the
    /// token is cancelled.
    async fn serve_at(
        addr: Option<std::net::SocketAddr>,
        tasks: &TaskTracker,
    ) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let broker = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let services = server::Services {
            broker,
            handoff: None,
            replicas: None,
        };
        let stop = CancellationToken::new();
        tasks.spawn(server::run(listener, services, tasks.clone(), stop.clone()));
        (addr, stop)
    }

    fn remote(addr: std::net::SocketAddr, tasks: &TaskTracker) -> RemoteBroker {
        let broker = BrokerAddr {
            name: "b1".into(),
            addr: addr.to_string(),
        };
        RemoteBroker::dial(&TcpDialer, &broker, tasks.clone(), CancellationToken::new()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_publishes_keep_each_channels_order_and_refusals_keep_their_kind() {
        let tasks = TaskTracker::new();
        let (addr, stop) = serve_at(None, &tasks).await;
        let b = remote(addr, &tasks);
        let mut calls: Vec<_> = (1..=200u64)
            .map(|n| Box::pin(b.publish(publish(&format!("c:{}", n % 4), n, None))))
            .collect();
        // A call's first poll queues it on the stream: polled once each in
        // the order made, they are queued in that order, all before any
        // answer, and the broker reads them pipelined. Unconstrained: with
        // tokio's cooperative budget (128 operations a poll), the later
        // first polls would find it spent and queue nothing, to be queued
        // later in whatever order they are woken.
        tokio::task::unconstrained(std::future::poll_fn(|cx| {
            for call in &mut calls {
                assert!(call.as_mut().poll(cx).is_pending());
            }
            std::task::Poll::Ready(())
        }))
        .await;
        let positions = join_all(calls).await;
        for (i, p) in positions.iter().enumerate() {
            let n = i as u64 + 1;
            // Channel n % 4 gets every fourth publish: its k-th is offset k.
            assert_eq!(p.as_ref().unwrap().offset, n.div_ceil(4), "publish {n}");
        }
        assert_eq!(
            b.publish(publish("c:0", 0, Some(""))).await,
            Err(BrokerError::InvalidIdempotencyKey)
        );
        let first = b.publish(publish("c:0", 0, Some("k1"))).await.unwrap();
        assert_eq!(first.offset, 51);
        // A retry with the key is answered with the first position.
        assert_eq!(b.publish(publish("c:0", 0, Some("k1"))).await, Ok(first));
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_stream_fails_its_calls_and_the_next_publish_opens_another() {
        let tasks = TaskTracker::new();
        let (addr, stop) = serve_at(None, &tasks).await;
        let b = remote(addr, &tasks);
        assert_eq!(b.publish(publish("c", 1, None)).await.unwrap().offset, 1);
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = StdInstant::now();
        let refused = b.publish(publish("c", 2, None)).await;
        assert!(
            matches!(refused, Err(BrokerError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "bounded as a unary call"
        );
        let (_, stop) = serve_at(Some(addr), &tasks).await;
        let reopened = StdInstant::now();
        loop {
            match b.publish(publish("c", 3, None)).await {
                // A new broker process: the channel starts anew.
                Ok(p) => break assert_eq!(p.offset, 1),
                Err(BrokerError::Unavailable(_)) if reopened.elapsed() < Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        stop.cancel();
    }
}
