//! The server API for application backends (docs/api.md): publish, send to
//! a user, disconnect, unsubscribe, presence, history, channels and info,
//! over HTTP JSON (`POST /api/<call>`) and gRPC (`switchboard.api.v1.Api`)
//! on one router, behind API keys.
//!
//! - [`admission`]: how many requests at once, and the deadline on each request body.
//! - [`ops`]: the operations, independent of transport; all go through the `Broker` trait.
//! - [`params`]: what each operation takes: the HTTP JSON bodies, which gRPC messages convert into.
//! - [`results`]: what each operation answers, as JSON and converted into gRPC replies.
//! - [`http`]: axum routes, the JSON body extractor, HTTP refusals as API errors.
//! - [`grpc`]: the tonic service and its API key interceptor.
//! - [`key`]: API keys and the `Authorization: apikey <key>` check.
//! - [`error`]: API errors, their stable codes, and their JSON and gRPC forms.

pub mod admission;
pub mod error;
pub mod grpc;
pub mod http;
pub mod key;
pub mod ops;
pub mod params;
pub mod results;

use std::sync::Arc;

use axum::{Router, middleware};
use switchboard_core::Broker;

pub use error::ApiError;
pub use key::{ApiKeyError, ApiKeys};
pub use ops::Operations;

use crate::gateway::Gateway;

/// Both faces of the API on one router: `/api/...` and the gRPC service.
pub fn router<B: Broker>(gateway: Arc<Gateway<B>>) -> Result<Router, ApiKeyError> {
    let config = &gateway.settings.api;
    let keys = ApiKeys::new(&config.keys)?;
    if keys.is_empty() {
        tracing::warn!("the server API has no keys (`[api] keys`): every call is refused");
    }
    let max_body_bytes = config.max_body_bytes;
    let ops = Operations::new(gateway.clone());
    let state = http::ApiState {
        ops: ops.clone(),
        max_body_bytes,
    };
    let admission = Arc::new(admission::Admission::new(
        config.max_concurrent_requests,
        config.body_timeout,
    ));
    Ok(http::routes(state, keys.clone())
        .merge(grpc::routes(ops, keys, max_body_bytes))
        .layer(middleware::from_fn_with_state(admission, admission::admit)))
}
