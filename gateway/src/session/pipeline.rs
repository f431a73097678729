//! Requests in flight: a request on a channel starts when its channel's
//! lane is free ([`super::inflight`]) and runs as a [`Call`] beside the
//! connection's other calls; its answer, and what its channel received
//! meanwhile, go out when it completes, in whatever order the calls end.
//! The connection polls [`Session::completed`] beside its socket.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use serde_json::value::RawValue;
use switchboard_core::{
    Broker, ChannelName,
    frame::{Request, parse},
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Session, Step, Subscription, inflight::Lanes};
use crate::{error::RequestError, hub::Outgoing, telemetry};

/// A connection's requests in flight.
pub(super) struct Flight {
    /// Requests read and not answered, by channel, and the deliveries
    /// waiting behind them; waiting requests are kept as the text they
    /// came in.
    lanes: Lanes<String, Arc<Outgoing>>,
    /// The calls running, one per busy lane.
    running: FuturesUnordered<Call>,
}

/// One request's work at the broker, owning all it needs.
pub(crate) type Call = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A finished call: the frame for the client and what it changed.
pub(crate) struct Done {
    channel: ChannelName,
    frame: Option<Utf8Bytes>,
    /// For a subscribe: the subscription, if it was made.
    joined: Option<Option<Subscription>>,
}

impl Done {
    /// The end of a request that changes nothing on the connection.
    pub(super) fn answered(
        channel: ChannelName,
        id: Option<&RawValue>,
        result: Result<Option<Utf8Bytes>, RequestError>,
    ) -> Self {
        let frame = match result {
            Ok(frame) => frame,
            Err(e) => Some(error_frame(id, &e)),
        };
        Self {
            channel,
            frame,
            joined: None,
        }
    }

    /// The end of a subscribe.
    pub(super) fn joined(
        channel: ChannelName,
        id: Option<&RawValue>,
        result: Result<(Utf8Bytes, Subscription), RequestError>,
    ) -> Self {
        let (frame, sub) = match result {
            Ok((frame, sub)) => (frame, Some(sub)),
            Err(e) => (error_frame(id, &e), None),
        };
        Self {
            channel,
            frame: Some(frame),
            joined: Some(sub),
        }
    }
}

fn error_frame(id: Option<&RawValue>, e: &RequestError) -> Utf8Bytes {
    telemetry::error(e.label(), e.code());
    e.frame(id)
}

/// The channel a request is about; requests without one are answered at once.
pub(super) fn channel_of<'r>(request: &'r Request<'_>) -> Option<&'r ChannelName> {
    match request {
        Request::Subscribe { channel, .. }
        | Request::Unsubscribe { channel }
        | Request::Publish { channel, .. }
        | Request::Presence { channel, .. }
        | Request::PresenceStats { channel }
        | Request::History { channel, .. } => Some(channel),
        Request::Ping | Request::Auth { .. } | Request::Refresh { .. } => None,
    }
}

/// Polls a call once where it was made: a broker in the same process
/// usually answers at once, and the reply then goes out with no further
/// wake-up. A call still pending is polled again, with the connection's
/// waker, once it is in the connection's set.
fn poll_once(call: &mut Call) -> Poll<Done> {
    call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

impl<B: Broker> Session<B> {
    /// Whether the connection may read another request: requests read and
    /// not answered are bounded by `limits.max_requests_in_flight`, and
    /// beyond it the client's frames wait in the socket (backpressure).
    pub fn reading(&self) -> bool {
        self.flight.as_ref().is_none_or(|f| f.lanes.has_room())
    }

    /// Whether calls are running, to be polled with [`Self::completed`].
    pub fn in_flight(&self) -> bool {
        self.flight.as_ref().is_some_and(|f| f.lanes.open() > 0)
    }

    fn flight(&mut self) -> &mut Flight {
        let limits = &self.gateway.settings.gateway.limits;
        let (limit, hold) = (limits.max_requests_in_flight, limits.outbound_queue);
        self.flight.get_or_insert_with(|| {
            Box::new(Flight {
                lanes: Lanes::new(limit, hold),
                running: FuturesUnordered::new(),
            })
        })
    }

    /// The next call to complete, as frames to write. Cancel-safe: a call
    /// is only taken from the set when it is done, and the rest is
    /// synchronous.
    pub async fn completed(&mut self) -> Step {
        let next = match self.flight.as_mut() {
            Some(flight) => flight.running.next().await,
            None => None,
        };
        match next {
            Some(done) => {
                let mut step = Step::default();
                self.settle(done, &mut step);
                step
            }
            None => std::future::pending().await,
        }
    }

    /// Takes a request on `channel`: starts it if the channel is free,
    /// otherwise queues it (as its text) behind the one running.
    pub(super) fn dispatch(
        &mut self,
        text: &str,
        id: Option<&RawValue>,
        channel: &ChannelName,
        request: Request<'_>,
    ) -> Step {
        let mut step = Step::default();
        if self.flight().lanes.admit(channel, || text.to_owned()) {
            let channel = channel.clone();
            if self.launch(id, request, &mut step) {
                self.next_of(&channel, &mut step);
            }
        }
        step
    }

    /// Starts a request whose lane is this one's; true if it is already
    /// answered (into `step`) and the lane moves on.
    fn launch(&mut self, id: Option<&RawValue>, request: Request<'_>, step: &mut Step) -> bool {
        let mut call = match self.call(id, request) {
            Ok(call) => call,
            Err(e) => {
                step.frames.push(error_frame(id, &e));
                return true;
            }
        };
        match poll_once(&mut call) {
            Poll::Ready(done) => {
                self.apply(done, step);
                true
            }
            Poll::Pending => {
                self.flight().running.push(call);
                false
            }
        }
    }

    fn call(&mut self, id: Option<&RawValue>, request: Request<'_>) -> Result<Call, RequestError> {
        match request {
            Request::Subscribe { channel, since } => self.subscribe(id, channel, since),
            Request::Unsubscribe { channel } => self.unsubscribe(id, channel),
            Request::Publish { channel, data } => self.publish(id, channel, data),
            Request::Presence {
                channel,
                cursor,
                limit,
            } => self.presence(id, channel, cursor, limit),
            Request::PresenceStats { channel } => self.presence_stats(id, channel),
            Request::History {
                channel,
                since,
                limit,
                reverse,
            } => self.history(id, channel, since, limit, reverse),
            Request::Ping | Request::Auth { .. } | Request::Refresh { .. } => {
                unreachable!("requests without a channel are answered at once")
            }
        }
    }

    /// Records what a finished call changed and queues its frame.
    fn apply(&mut self, done: Done, step: &mut Step) {
        if let Some(joined) = done.joined {
            self.joining = self.joining.saturating_sub(1);
            if let Some(sub) = joined {
                self.subs.insert(done.channel, sub);
                telemetry::subscriptions(1.0);
            }
        }
        step.frames.extend(done.frame);
    }

    /// A call completed: its frame, what its channel received meanwhile,
    /// then the channel's next requests.
    fn settle(&mut self, done: Done, step: &mut Step) {
        let channel = done.channel.clone();
        self.apply(done, step);
        self.next_of(&channel, step);
    }

    /// Releases the channel's held deliveries and starts its waiting
    /// requests until one is still running (or none is left).
    fn next_of(&mut self, channel: &ChannelName, step: &mut Step) {
        loop {
            let finished = self.flight().lanes.finish(channel);
            for out in finished.held {
                if self.admit_delivery(&out) {
                    step.frames.push(out.text.clone());
                }
            }
            let Some(text) = finished.next else { return };
            let answered = match parse::parse(&text) {
                Ok(incoming) => self.launch(incoming.id, incoming.request, step),
                // It parsed when it was read; this is not reached.
                Err(rejected) => {
                    let e = RequestError::from(rejected.error);
                    step.frames.push(error_frame(rejected.id, &e));
                    true
                }
            };
            if !answered {
                return;
            }
        }
    }

    /// Whether a delivery goes out now: one for a channel with a request
    /// running waits for that request's answer (and may then be covered
    /// by it). Too many waiting make the connection a slow consumer.
    pub(super) fn hold_or_pass(&mut self, out: &Arc<Outgoing>) -> bool {
        let Some(flight) = self.flight.as_mut() else {
            return true;
        };
        if flight.lanes.open() == 0 || !flight.lanes.is_busy(&out.channel) {
            return true;
        }
        if flight.lanes.hold(&out.channel, out.clone()).is_err() && !self.overflow.is_cancelled() {
            telemetry::queue_drop();
            self.overflow.cancel();
        }
        false
    }

    /// Runs a subscribe to its end before anything else (the personal
    /// channel's, when the connection authenticates).
    pub(super) async fn join_now(&mut self, call: Call, step: &mut Step) {
        let done = call.await;
        self.apply(done, step);
    }

    /// Lets the running calls end (a subscribe that succeeds is recorded,
    /// so that closing leaves it) and drops the requests still waiting.
    pub(super) async fn finish_calls(&mut self) {
        let Some(mut flight) = self.flight.take() else {
            return;
        };
        flight.lanes.abandon();
        let mut ignored = Step::default();
        while let Some(done) = flight.running.next().await {
            self.apply(done, &mut ignored);
        }
    }
}
