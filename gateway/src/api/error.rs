//! Server API errors, and the one place that turns them into the wire: a
//! JSON body `{"error":{"code","message"}}` with an HTTP status, or a gRPC
//! status with the code in the `switchboard-error-code` metadata. The
//! `code` strings are stable: backends switch on them (docs/api.md).

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use switchboard_core::BrokerError;
use thiserror::Error;

/// The gRPC metadata key that carries [`ApiError::code`].
pub const GRPC_CODE_METADATA: &str = "switchboard-error-code";

/// Seconds a 503 asks a backend to wait before retrying.
pub const RETRY_AFTER: &str = "1";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid channel name: {0}")]
    InvalidChannel(&'static str),
    #[error("invalid user id: {0}")]
    InvalidUser(&'static str),
    #[error("unknown channel namespace")]
    UnknownNamespace,
    #[error("personal channels are disabled (`[personal] enabled = false`)")]
    PersonalChannelsDisabled,
    #[error("{0} is not enabled for this channel")]
    NotAvailable(&'static str),
    #[error("{0}")]
    TooLarge(String),
    #[error("unsupported content type: send `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("no such API call: {0}")]
    NotFound(String),
    #[error("API calls use POST")]
    MethodNotAllowed,
    #[error("the broker is unavailable; retry later")]
    Unavailable,
    #[error("over capacity: the broker's memory budget is spent; retry later")]
    OverCapacity,
    #[error("too many API requests at once (api.max_concurrent_requests); retry later")]
    Overloaded,
    #[error("the request body did not arrive within api.body_timeout")]
    Timeout,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The stable code backends switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidChannel(_) => "invalid_channel",
            ApiError::InvalidUser(_) => "invalid_user",
            ApiError::UnknownNamespace => "unknown_namespace",
            ApiError::PersonalChannelsDisabled => "personal_channels_disabled",
            ApiError::NotAvailable(_) => "not_available",
            ApiError::TooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable => "unavailable",
            ApiError::OverCapacity => "over_capacity",
            ApiError::Overloaded => "overloaded",
            ApiError::Timeout => "timeout",
            ApiError::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_)
            | ApiError::InvalidChannel(_)
            | ApiError::InvalidUser(_)
            | ApiError::UnknownNamespace
            | ApiError::PersonalChannelsDisabled
            | ApiError::NotAvailable(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable | ApiError::OverCapacity | ApiError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::Unauthorized(_) => tonic::Code::Unauthenticated,
            ApiError::BadRequest(_)
            | ApiError::InvalidChannel(_)
            | ApiError::InvalidUser(_)
            | ApiError::UnknownNamespace
            | ApiError::UnsupportedMediaType => tonic::Code::InvalidArgument,
            ApiError::PersonalChannelsDisabled | ApiError::NotAvailable(_) => {
                tonic::Code::FailedPrecondition
            }
            ApiError::TooLarge(_) => tonic::Code::OutOfRange,
            ApiError::NotFound(_) | ApiError::MethodNotAllowed => tonic::Code::Unimplemented,
            ApiError::Unavailable | ApiError::Overloaded => tonic::Code::Unavailable,
            ApiError::OverCapacity => tonic::Code::ResourceExhausted,
            ApiError::Timeout => tonic::Code::DeadlineExceeded,
            ApiError::Internal => tonic::Code::Internal,
        }
    }

    /// The `{"code","message"}` object, as used in broadcast results too.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct Envelope {
    error: ErrorBody,
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::InvalidChannel(why) => ApiError::InvalidChannel(why),
            BrokerError::UnknownNamespace => ApiError::UnknownNamespace,
            BrokerError::NotAvailable(what) => ApiError::NotAvailable(what),
            // Only subscribes fill presence, and the API does not subscribe.
            BrokerError::InvalidData
            | BrokerError::InvalidIdempotencyKey
            | BrokerError::PresenceFull(_) => ApiError::BadRequest(e.to_string()),
            BrokerError::OverCapacity => ApiError::OverCapacity,
            BrokerError::ShuttingDown
            | BrokerError::NotAttached
            | BrokerError::NotOwner { .. }
            | BrokerError::Unavailable(_) => {
                tracing::warn!(error = %e, "broker unavailable to the server API");
                ApiError::Unavailable
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut res = (status, Json(Envelope { error: self.body() })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("apikey"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
        }
        res
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            GRPC_CODE_METADATA,
            tonic::metadata::MetadataValue::from_static(e.code()),
        );
        tonic::Status::with_metadata(e.grpc_code(), e.to_string(), metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn json_shape_and_statuses() {
        let res = ApiError::UnknownNamespace.into_response();
        assert_eq!(res.status(), 400);
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"unknown_namespace","message":"unknown channel namespace"}}"#
        );
        let res = ApiError::Unauthorized("x").into_response();
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "apikey");
    }

    #[test]
    fn grpc_status_carries_the_code() {
        let status = tonic::Status::from(ApiError::TooLarge("data is too large".into()));
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert_eq!(status.message(), "data is too large");
        assert_eq!(
            status.metadata().get(GRPC_CODE_METADATA).unwrap(),
            "too_large"
        );
    }
}
