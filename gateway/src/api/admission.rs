//! Admission of server API requests, HTTP and gRPC alike: at most
//! `api.max_concurrent_requests` served at once (beyond: 503 with
//! `Retry-After`, gRPC `UNAVAILABLE`), and each request body complete
//! within `api.body_timeout` of its headers (beyond: 408, gRPC
//! `DEADLINE_EXCEEDED`), so that a backend, or anyone with the port, cannot
//! hold requests open by sending their bodies slowly or never.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::header;
use http_body::{Frame, SizeHint};
use thiserror::Error;
use tokio::{sync::Semaphore, time::Sleep};

use super::error::ApiError;
use crate::{
    refusal::{self, Limit},
    telemetry,
};

/// The limits every API request passes.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    body_timeout: Duration,
}

impl Admission {
    pub fn new(max_concurrent_requests: usize, body_timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent_requests)),
            body_timeout,
        }
    }
}

/// A request body read past its deadline.
#[derive(Debug, Error)]
#[error("the request body did not arrive within api.body_timeout")]
pub struct BodyTimedOut;

/// True when `error` or one of its sources is [`BodyTimedOut`].
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(s) = source {
        if s.is::<BodyTimedOut>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The middleware: a permit for the whole request, a deadline on its body.
pub async fn admit(State(admission): State<Arc<Admission>>, req: Request, next: Next) -> Response {
    let Ok(permit) = admission.permits.clone().try_acquire_owned() else {
        refusal::record(Limit::ApiConcurrency);
        let error = ApiError::Overloaded;
        telemetry::api_call("admission", error.code());
        return if is_grpc(&req) {
            tonic::Status::from(error).into_http::<Body>()
        } else {
            error.into_response()
        };
    };
    let timeout = admission.body_timeout;
    let req = req.map(|body| Body::new(DeadlineBody::new(body, timeout)));
    let response = next.run(req).await;
    drop(permit);
    response
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A body that fails with [`BodyTimedOut`] once its deadline passes before
/// its end.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    timed_out: bool,
}

impl DeadlineBody {
    fn new(inner: Body, within: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
            timed_out: false,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out = true;
            refusal::record(Limit::BodyTimeout);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_with_the_timeout_one_that_ends_does_not() {
        let stalled =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, axum::Error>>());
        let body = DeadlineBody::new(stalled, Duration::from_secs(1));
        let err = body.collect().await.unwrap_err();
        assert!(timed_out(&err), "{err}");

        let body = DeadlineBody::new(Body::from("{}"), Duration::from_secs(1));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{}");
    }
}
