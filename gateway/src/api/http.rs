//! The HTTP face of the server API: `POST /api/<call>` with a JSON body,
//! answered with JSON. Every refusal, axum's own included (bad JSON, wrong
//! content type, body too large, unknown path, wrong method), comes out as
//! an [`ApiError`] body.

use axum::{
    Json, Router,
    extract::{FromRequest, OriginalUri, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
};
use http::header;
use serde::{Serialize, de::DeserializeOwned};
use switchboard_core::Broker;

use super::{
    error::ApiError,
    key::ApiKeys,
    ops::{Operations, observe},
    params,
};

/// The prefix every HTTP call lives under.
pub const PREFIX: &str = "/api";

/// Every call, by its path under `/api/`; the OpenAPI test checks each.
pub const CALLS: &[&str] = &[
    "publish",
    "broadcast",
    "send_to_user",
    "disconnect_user",
    "unsubscribe_user",
    "presence",
    "presence_stats",
    "user_online",
    "history",
    "channels",
    "info",
];

/// Shared by every handler.
pub struct ApiState<B: Broker> {
    pub ops: Operations<B>,
    pub max_body_bytes: usize,
}

impl<B: Broker> Clone for ApiState<B> {
    fn clone(&self) -> Self {
        Self {
            ops: self.ops.clone(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The `/api/...` routes, behind the API key check.
pub fn routes<B: Broker>(state: ApiState<B>, keys: ApiKeys) -> Router {
    macro_rules! call {
        ($router:expr, $name:literal, $method:ident, $params:ty) => {
            $router.route(
                concat!("/", $name),
                post(
                    |State(st): State<ApiState<B>>, ApiJson(p): ApiJson<$params>| async move {
                        reply(observe($name, st.ops.$method(p).await))
                    },
                ),
            )
        };
    }
    let router = Router::new();
    let router = call!(router, "publish", publish, params::PublishParams);
    let router = call!(router, "broadcast", broadcast, params::BroadcastParams);
    let router = call!(
        router,
        "send_to_user",
        send_to_user,
        params::SendToUserParams
    );
    let router = call!(
        router,
        "disconnect_user",
        disconnect_user,
        params::DisconnectUserParams
    );
    let router = call!(
        router,
        "unsubscribe_user",
        unsubscribe_user,
        params::UnsubscribeUserParams
    );
    let router = call!(router, "presence", presence, params::PresenceParams);
    let router = call!(
        router,
        "presence_stats",
        presence_stats,
        params::ChannelParams
    );
    let router = call!(router, "user_online", user_online, params::UserParams);
    let router = call!(router, "history", history, params::HistoryParams);
    let router = call!(router, "channels", channels, params::ChannelsParams);
    let router = call!(router, "info", info, params::InfoParams);
    let api = router
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(keys, require_key))
        .with_state(state);
    Router::new().nest(PREFIX, api)
}

fn reply<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn require_key(State(keys): State<ApiKeys>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    match keys.check(header) {
        Ok(()) => next.run(req).await,
        Err(e) => observe::<()>("auth", Err(e)).unwrap_err().into_response(),
    }
}

/// A JSON body: `application/json` (or `+json`), or no content type at
/// all; at most `max_body_bytes`; an empty body counts as `{}`.
pub struct ApiJson<T>(pub T);

impl<B: Broker, T: DeserializeOwned> FromRequest<ApiState<B>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState<B>) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let essence = ct
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let max = state.max_body_bytes;
        let too_large = || {
            ApiError::TooLarge(format!(
                "request body is over {max} bytes (api.max_body_bytes)"
            ))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let body = axum::body::to_bytes(req.into_body(), max)
            .await
            .map_err(|e| {
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                let mut limited = false;
                while let Some(s) = source {
                    limited |= s.is::<http_body_util::LengthLimitError>();
                    source = s.source();
                }
                if limited {
                    too_large()
                } else if super::admission::timed_out(&e) {
                    ApiError::Timeout
                } else {
                    ApiError::BadRequest(format!("could not read the request body: {e}"))
                }
            })?;
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &body
        };
        serde_json::from_slice(body).map(ApiJson).map_err(|e| {
            ApiError::BadRequest(if e.is_syntax() || e.is_eof() {
                format!("malformed JSON: {e}")
            } else {
                format!("invalid request: {e}")
            })
        })
    }
}
