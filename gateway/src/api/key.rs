//! API keys: which `Authorization: apikey <key>` headers are accepted.
//! Sans-IO: a header value in, a verdict out.

use std::{fmt, sync::Arc};

use thiserror::Error;

use super::error::ApiError;

/// The header scheme, matched case-insensitively as HTTP schemes are.
pub const SCHEME: &str = "apikey";

/// A key in `[api] keys` that cannot work.
#[derive(Debug, Error)]
pub enum ApiKeyError {
    #[error("api.keys[{0}] is empty")]
    Empty(usize),
    #[error("api.keys[{0}] must be printable ASCII without spaces (it travels in an HTTP header)")]
    NotHeaderSafe(usize),
}

/// The accepted keys. Several at once, so that a key can be rotated: add
/// the new one, move every backend over, then remove the old one.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<[Box<[u8]>]>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys([{} redacted])", self.keys.len())
    }
}

impl ApiKeys {
    pub fn new(keys: &[String]) -> Result<Self, ApiKeyError> {
        for (i, key) in keys.iter().enumerate() {
            if key.is_empty() {
                return Err(ApiKeyError::Empty(i));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiKeyError::NotHeaderSafe(i));
            }
        }
        Ok(Self {
            keys: keys.iter().map(|k| k.as_bytes().into()).collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the value of an `Authorization` header (or gRPC metadata).
    pub fn check(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(value) = authorization else {
            return Err(ApiError::Unauthorized(
                "missing API key: send the header `Authorization: apikey <key>`",
            ));
        };
        let (scheme, key) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(ApiError::Unauthorized(
                "the Authorization scheme must be `apikey`: `Authorization: apikey <key>`",
            ));
        }
        if self.keys.is_empty() {
            return Err(ApiError::Unauthorized(
                "no API keys are configured on this server (`[api] keys`)",
            ));
        }
        let key = key.trim().as_bytes();
        // Compare with every key, without stopping early, so that timing
        // says nothing about how much of a guess was right.
        let accepted = self
            .keys
            .iter()
            .fold(false, |found, k| found | constant_time_eq(k, key));
        if accepted {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("API key not accepted"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> ApiKeys {
        ApiKeys::new(&k.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn every_configured_key_works() {
        let k = keys(&["old-key", "new-key"]);
        assert!(k.check(Some("apikey old-key")).is_ok());
        assert!(k.check(Some("ApiKey new-key")).is_ok());
        assert!(k.check(Some("  APIKEY   new-key ")).is_ok());
    }

    #[test]
    fn refusals_say_why() {
        let k = keys(&["secret"]);
        let why = |h: Option<&str>| match k.check(h) {
            Err(ApiError::Unauthorized(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(why(None).contains("missing"));
        assert!(why(Some("Bearer secret")).contains("scheme"));
        assert!(why(Some("apikey secreT")).contains("not accepted"));
        assert!(why(Some("apikey")).contains("not accepted"));
        assert!(why(Some("apikey secret2")).contains("not accepted"));
        assert!(matches!(
            keys(&[]).check(Some("apikey x")),
            Err(ApiError::Unauthorized(m)) if m.contains("no API keys")
        ));
    }

    #[test]
    fn config_errors() {
        assert!(matches!(
            ApiKeys::new(&["ok".into(), String::new()]),
            Err(ApiKeyError::Empty(1))
        ));
        assert!(matches!(
            ApiKeys::new(&["has space".into()]),
            Err(ApiKeyError::NotHeaderSafe(0))
        ));
        assert_eq!(format!("{:?}", keys(&["x"])), "ApiKeys([1 redacted])");
    }
}
