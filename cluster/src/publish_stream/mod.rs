//! [`PublishStream`]: a gateway's publishes to one broker, pipelined on
//! one long-lived `PublishStream` call instead of one unary `Publish` call
//! each: the per-call cost of gRPC (headers, routing, a task at the
//! broker) was most of what the cluster hop cost (docs/benchmarks.md,
//! sessions 10 and 11).
//!
//! Each call gets an id ([`waiters::Waiters`]); whatever calls wait when
//! the stream is written go as one message ([`crate::bundle::Bundles`]),
//! and the broker's answers, in whatever order its calls end, find their
//! callers by id. The stream opens at the first publish and stays; once
//! it ends (the broker died, the connection was reset, the broker refused
//! it), every call in flight fails with the status that ended it, read by
//! [`crate::wire::broker_error`] as a broken unary call's would be, and
//! the next publish opens a new one.
//!
//! - `waiters`: the calls in flight by id (sans-IO).

pub mod waiters;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use parking_lot::Mutex;
use switchboard_proto::broker::v1::{self as pb, broker_client::BrokerClient};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Code, Status, transport::Channel};

use self::waiters::{Outcome, Waiters};
use crate::{bundle::Bundles, wire};

/// Calls queued for the stream before publishers wait: with the broker's
/// own bound on calls in flight, how a slow broker pushes back.
const CALLS_QUEUED: usize = 1024;
/// Most calls in one stream message.
const BUNDLE_MAX: usize = 256;
/// A bundle stops growing before its requests' data reach this many
/// bytes, well under the broker's message size limit.
const BUNDLE_BYTES: usize = 256 * 1024;

/// One broker's publish stream, opened when first needed. Shared by every
/// clone of its [`crate::RemoteBroker`].
pub struct PublishStream {
    client: BrokerClient<Channel>,
    open: Mutex<Option<Link>>,
    /// The broker does not serve `PublishStream` (an older one): publishes
    /// go as unary calls.
    unsupported: AtomicBool,
    /// The owning role's tasks: the stream's reader runs there, until
    /// `stop`.
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// The stream open now.
#[derive(Clone)]
struct Link {
    calls: mpsc::Sender<pb::PublishCall>,
    waiters: Arc<Mutex<Waiters>>,
}

/// Forgets a call whose caller stopped waiting (timed out, or gone), so
/// that it is not sent if it has not been yet, and its answer is dropped.
struct Forget<'a> {
    waiters: &'a Mutex<Waiters>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiters.lock().forget(self.id);
    }
}

impl PublishStream {
    pub fn new(client: BrokerClient<Channel>, tasks: TaskTracker, stop: CancellationToken) -> Self {
        Self {
            client,
            open: Mutex::new(None),
            unsupported: AtomicBool::new(false),
            tasks,
            stop,
        }
    }

    /// Whether the broker turned the stream down as unknown to it: the
    /// caller publishes with the unary call instead.
    pub fn unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Publishes `request` on the stream (opened if it is not), routed by
    /// ring version `ring` (0: none), for the broker to give up after
    /// `timeout`. Its outcome, or the status that ended the stream before
    /// it was answered. Not bounded in time here: the caller bounds it.
    pub async fn publish(
        &self,
        request: pb::PublishRequest,
        ring: u64,
        timeout: Duration,
    ) -> Outcome {
        let link = self.link();
        // The stream may have ended between `link` and here (it was just
        // opened, and an older broker turned it down at once): that
        // refusal marks the broker too, or this publish failed with it
        // and the next one opened the stream again (a CI run of
        // node/tests/publish_stream_fallback.rs, session 17).
        let registered = link.waiters.lock().register();
        let (id, answer) = registered.inspect_err(|why| self.turned_down(why))?;
        let _forget = Forget {
            waiters: &link.waiters,
            id,
        };
        let call = pb::PublishCall {
            id,
            request: Some(request),
            ring,
            timeout_millis: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        };
        let mut answer = answer;
        // A stream that ended may never take the call (nor free a place in
        // a full queue): its end answers it meanwhile.
        let early = tokio::select! {
            biased;
            outcome = &mut answer => Some(outcome),
            _ = link.calls.send(call) => None,
        };
        let outcome = match early {
            Some(outcome) => outcome,
            None => answer.await,
        }
        .unwrap_or_else(|_| Err(Status::unavailable("publish stream ended")));
        if let Err(status) = &outcome
            && link.waiters.lock().has_ended()
        {
            self.turned_down(status);
        }
        outcome
    }

    /// The stream ended with `why`: if the broker does not know the
    /// method, publishes go as unary calls from now on.
    fn turned_down(&self, why: &Status) {
        if why.code() == Code::Unimplemented {
            self.unsupported.store(true, Ordering::Relaxed);
        }
    }

    /// The stream open now, or a new one.
    fn link(&self) -> Link {
        let mut open = self.open.lock();
        if let Some(link) = open.as_ref()
            && !link.waiters.lock().has_ended()
        {
            return link.clone();
        }
        let (calls, queued) = mpsc::channel(CALLS_QUEUED);
        let link = Link {
            calls,
            waiters: Arc::default(),
        };
        *open = Some(link.clone());
        self.tasks.spawn(run(
            self.client.clone(),
            queued,
            link.waiters.clone(),
            self.stop.clone(),
        ));
        link
    }
}

/// The weight of a call in a bundle: its data.
fn weight(call: &pb::PublishCall) -> usize {
    call.request.as_ref().map_or(0, |r| r.data_json.len())
}

/// Opens the stream, writes the calls queued in `queued` as they come and
/// hands each answer to its waiter, until the stream ends or `stop`; then
/// fails every call still waiting.
async fn run(
    mut client: BrokerClient<Channel>,
    queued: mpsc::Receiver<pb::PublishCall>,
    waiters: Arc<Mutex<Waiters>>,
    stop: CancellationToken,
) {
    let unsent = waiters.clone();
    let outgoing = Bundles::new(queued, BUNDLE_MAX, BUNDLE_BYTES, weight).map(move |mut calls| {
        // Callers that gave up before their call left need not have it
        // applied (a unary call given up is cancelled too).
        let unsent = unsent.lock();
        calls.retain(|c| unsent.is_waiting(c.id));
        pb::PublishCalls { calls }
    });
    let why = tokio::select! {
        biased;
        () = stop.cancelled() => Status::unavailable("gateway stopping"),
        why = answers(&mut client, outgoing, &waiters) => why,
    };
    let mut waiters = waiters.lock();
    if !waiters.is_empty() {
        tracing::debug!(calls = waiters.len(), error = %why, "publish stream ended with calls in flight");
    }
    waiters.end(why);
}

/// Hands the stream's answers to their waiters until it ends; why it did.
async fn answers(
    client: &mut BrokerClient<Channel>,
    outgoing: impl futures_util::Stream<Item = pb::PublishCalls> + Send + 'static,
    waiters: &Mutex<Waiters>,
) -> Status {
    let mut incoming = match client.publish_stream(outgoing).await {
        Ok(response) => response.into_inner(),
        Err(status) => return status,
    };
    loop {
        match incoming.message().await {
            Ok(Some(bundle)) => {
                let mut waiters = waiters.lock();
                for answer in bundle.answers {
                    let (id, outcome) = wire::publish_answer_from_pb(answer);
                    waiters.answer(id, outcome);
                }
            }
            Ok(None) => return Status::unavailable("publish stream ended by the broker"),
            Err(status) => return status,
        }
    }
}
