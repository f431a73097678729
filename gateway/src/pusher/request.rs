//! Pusher's HTTP API request signatures, checked as plain data: the
//! app's key, a timestamp within the window, version 1.0, the body's MD5,
//! and the HMAC-SHA256 of `METHOD\npath\nsorted query` with the app secret.

use md5::{Digest, Md5};

use crate::pusher::signature;

/// How far `auth_timestamp` may be from the server's clock, in seconds
/// (Pusher's own window).
pub const TIMESTAMP_WINDOW_SECS: u64 = 600;

/// Why a request's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    #[error("Missing {0}")]
    Missing(&'static str),
    #[error("Unknown auth_key")]
    WrongKey,
    #[error("Unsupported auth_version (1.0 is)")]
    Version,
    #[error(
        "Timestamp expired: auth_timestamp must be within {TIMESTAMP_WINDOW_SECS} seconds of the server time"
    )]
    Expired,
    #[error("body_md5 does not match the body")]
    BodyMd5,
    #[error("Invalid signature: expected HMAC SHA256 hex digest of {0:?}")]
    Signature(String),
}

/// A request as its signature covers it.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Decoded query parameters, `auth_signature` among them.
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Checks `req` against the app's `key` and `secret` at `now` (Unix seconds).
pub fn verify(
    key: &str,
    secret: &str,
    req: &SignedRequest<'_>,
    now: u64,
) -> Result<(), RequestAuthError> {
    let param = |name: &str| {
        req.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let given_key = param("auth_key").ok_or(RequestAuthError::Missing("auth_key"))?;
    let timestamp = param("auth_timestamp").ok_or(RequestAuthError::Missing("auth_timestamp"))?;
    let version = param("auth_version").ok_or(RequestAuthError::Missing("auth_version"))?;
    let given = param("auth_signature").ok_or(RequestAuthError::Missing("auth_signature"))?;
    if given_key != key {
        return Err(RequestAuthError::WrongKey);
    }
    if version != "1.0" {
        return Err(RequestAuthError::Version);
    }
    let timestamp: u64 = timestamp.parse().map_err(|_| RequestAuthError::Expired)?;
    if timestamp.abs_diff(now) > TIMESTAMP_WINDOW_SECS {
        return Err(RequestAuthError::Expired);
    }
    if !req.body.is_empty() {
        let md5 = param("body_md5").ok_or(RequestAuthError::Missing("body_md5"))?;
        if md5 != body_md5(req.body) {
            return Err(RequestAuthError::BodyMd5);
        }
    }
    let signed = string_to_sign(req);
    let auth = format!("{key}:{given}");
    signature::verify(key, secret, &signed, &auth).map_err(|_| RequestAuthError::Signature(signed))
}

/// `METHOD\npath\nk1=v1&k2=v2…`: every parameter but `auth_signature`,
/// keys lowercased, sorted by key, values as they are (not URL-encoded).
pub fn string_to_sign(req: &SignedRequest<'_>) -> String {
    let mut params: Vec<(String, &str)> = req
        .query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}\n{}\n{}", req.method, req.path, query.join("&"))
}

/// The lowercase hex MD5 of a request body.
pub fn body_md5(body: &[u8]) -> String {
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Pusher's published worked example of a signed `POST /apps/3/events`.
    #[test]
    fn matches_the_published_example() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let mut q = query(&[
            ("auth_key", "278d425bdf160c739803"),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        ]);
        let req = SignedRequest {
            method: "POST",
            path: "/apps/3/events",
            query: &q,
            body,
        };
        let expected = signature::sign("7ad3773142a6692b25b8", &string_to_sign(&req));
        assert_eq!(
            expected,
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        q.push(("auth_signature".into(), expected));
        let req = SignedRequest {
            method: "POST",
            path: "/apps/3/events",
            query: &q,
            body,
        };
        let key = "278d425bdf160c739803";
        assert_eq!(
            verify(key, "7ad3773142a6692b25b8", &req, 1353088179),
            Ok(())
        );
        assert_eq!(
            verify(key, "7ad3773142a6692b25b8", &req, 1353088179 + 601),
            Err(RequestAuthError::Expired)
        );
        assert!(matches!(
            verify(key, "other", &req, 1353088179),
            Err(RequestAuthError::Signature(_))
        ));
        assert_eq!(
            verify("k2", "7ad3773142a6692b25b8", &req, 1353088179),
            Err(RequestAuthError::WrongKey)
        );
        let tampered = SignedRequest { body: b"{}", ..req };
        assert_eq!(
            verify(key, "7ad3773142a6692b25b8", &tampered, 1353088179),
            Err(RequestAuthError::BodyMd5)
        );
    }
}
