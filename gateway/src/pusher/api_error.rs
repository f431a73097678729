//! The HTTP API's errors, and how each goes on the wire: a status and a
//! plain-text message, as Pusher answers (its server SDKs raise by status).

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use switchboard_core::BrokerError;

use crate::pusher::request::RequestAuthError;

#[derive(Debug, thiserror::Error)]
pub enum PusherApiError {
    #[error("Unknown app")]
    UnknownApp,
    #[error("{0}")]
    Auth(#[from] RequestAuthError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("Service unavailable: {0}")]
    Unavailable(BrokerError),
}

impl PusherApiError {
    pub fn bad(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    fn status(&self) -> StatusCode {
        match self {
            PusherApiError::UnknownApp => StatusCode::NOT_FOUND,
            PusherApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            PusherApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PusherApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PusherApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<BrokerError> for PusherApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::InvalidChannel(why) => Self::bad(format!("Invalid channel: {why}")),
            other => Self::Unavailable(other),
        }
    }
}

impl IntoResponse for PusherApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        crate::telemetry::api_call("pusher", "error");
        (status, format!("{self}\n")).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_pushers() {
        let s = |e: PusherApiError| e.into_response().status().as_u16();
        assert_eq!(s(PusherApiError::UnknownApp), 404);
        assert_eq!(s(RequestAuthError::Expired.into()), 401);
        assert_eq!(s(PusherApiError::bad("x")), 400);
        assert_eq!(s(PusherApiError::TooLarge("x".into())), 413);
    }
}
