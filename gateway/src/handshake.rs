//! The WebSocket opening handshake (RFC 6455 §4.2), checked as plain data:
//! is this a valid upgrade, which subprotocol do we select, and which
//! token did the client bring along.

use axum::extract::Query;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The subprotocol clients offer next to `auth.<token>`.
pub const PROTOCOL: &str = "switchboard";

/// The opt-in subprotocol whose text frames carry several messages, one
/// per line (docs/protocol.md, "Batched frames"). Selected over
/// [`PROTOCOL`] when a client offers both: offering it is the opt-in.
pub const BATCH_PROTOCOL: &str = "switchboard.batch";

/// Prefix of the subprotocol that carries a token.
const TOKEN_PROTOCOL_PREFIX: &str = "auth.";

#[derive(Debug)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept` for the response.
    pub accept_key: String,
    /// The subprotocol to select, if the client offered ours.
    pub protocol: Option<&'static str>,
    /// A token from the `token` query parameter or an `auth.` subprotocol.
    pub token: Option<String>,
}

/// A refused upgrade: an HTTP status and a message for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub message: &'static str,
}

impl Refused {
    fn bad(message: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

pub fn check(method: &http::Method, uri: &Uri, headers: &HeaderMap) -> Result<Accepted, Refused> {
    if method != http::Method::GET {
        return Err(Refused {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "WebSocket upgrade needs GET",
        });
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Refused {
            status: StatusCode::UPGRADE_REQUIRED,
            message: "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        });
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err(Refused::bad(
            "unsupported Sec-WebSocket-Version: 13 is required",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Refused::bad("missing Sec-WebSocket-Key"))?;
    let accept_key = derive_accept_key(key.as_bytes());

    let mut protocol = None;
    let mut token = None;
    for offered in headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if offered == BATCH_PROTOCOL {
            protocol = Some(BATCH_PROTOCOL);
        } else if offered == PROTOCOL {
            protocol = protocol.or(Some(PROTOCOL));
        } else if let Some(t) = offered.strip_prefix(TOKEN_PROTOCOL_PREFIX) {
            token = Some(t.to_owned());
        }
    }
    if token.is_some() && protocol.is_none() {
        // The token protocol can never be selected (that would echo the
        // token), so without ours the browser would fail the handshake.
        return Err(Refused::bad(
            "offer the `switchboard` (or `switchboard.batch`) subprotocol next to `auth.<token>`",
        ));
    }
    if let Ok(Query(q)) = Query::<TokenQuery>::try_from_uri(uri)
        && let Some(t) = q.token
    {
        token = Some(t);
    }
    Ok(Accepted {
        accept_key,
        protocol,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(extra: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        for (k, v) in extra {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn accepts_and_finds_tokens() {
        let get = http::Method::GET;
        let a = check(&get, &"/ws".parse().unwrap(), &headers(&[])).unwrap();
        assert_eq!(a.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!((a.protocol, a.token), (None, None));
        let a = check(&get, &"/ws?token=abc".parse().unwrap(), &headers(&[])).unwrap();
        assert_eq!(a.token.as_deref(), Some("abc"));
        let a = check(
            &get,
            &"/ws".parse().unwrap(),
            &headers(&[("sec-websocket-protocol", "switchboard, auth.x.y.z")]),
        )
        .unwrap();
        assert_eq!(
            (a.protocol, a.token.as_deref()),
            (Some("switchboard"), Some("x.y.z"))
        );
    }

    #[test]
    fn batch_is_selected_when_offered_in_any_order() {
        let get = http::Method::GET;
        let uri: Uri = "/ws".parse().unwrap();
        for offer in [
            "switchboard.batch",
            "switchboard.batch, switchboard",
            "switchboard, switchboard.batch",
            "auth.x.y.z, switchboard.batch",
        ] {
            let a = check(&get, &uri, &headers(&[("sec-websocket-protocol", offer)])).unwrap();
            assert_eq!(a.protocol, Some(BATCH_PROTOCOL), "{offer}");
        }
    }

    #[test]
    fn refuses_bad_upgrades() {
        let get = http::Method::GET;
        let uri: Uri = "/ws".parse().unwrap();
        assert_eq!(
            check(&http::Method::POST, &uri, &headers(&[]))
                .unwrap_err()
                .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            check(&get, &uri, &HeaderMap::new()).unwrap_err().status,
            StatusCode::UPGRADE_REQUIRED
        );
        let mut h = headers(&[]);
        h.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert_eq!(
            check(&get, &uri, &h).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let only_token = headers(&[("sec-websocket-protocol", "auth.x.y.z")]);
        assert_eq!(
            check(&get, &uri, &only_token).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
