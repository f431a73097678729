//! Where tokens come from (none, a fixed one, or a provider called before
//! every connection attempt and before expiry) and when to renew one. Only
//! `exp` is read; the signature is the server's business.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

/// What a token provider may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future a token provider returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

#[derive(Clone)]
pub(crate) enum TokenSource {
    Anonymous,
    Fixed(String),
    Provider(Arc<dyn Fn() -> TokenFuture + Send + Sync>),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.write_str(match self {
            TokenSource::Anonymous => "Anonymous",
            TokenSource::Fixed(_) => "Fixed(..)",
            TokenSource::Provider(_) => "Provider(..)",
        })
    }
}

/// Seconds since the Unix epoch at which `token` expires, if it is a JWT
/// with a numeric `exp`.
pub fn expiry(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: serde_json::Value = serde_json::from_slice(&base64url(payload)?).ok()?;
    claims.get("exp")?.as_u64()
}

/// How long to wait before renewing a token that expires in `ttl`: late
/// enough not to renew needlessly, early enough for a slow token service.
pub fn refresh_delay(ttl: Duration, margin: Duration) -> Duration {
    ttl.saturating_sub(margin.min(ttl / 5))
}

/// Unpadded base64url (RFC 4648 §5), as in JWTs.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_from_a_jwt() {
        // {"sub":"a","exp":1893456000} and {"sub":"a"}
        let with = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjoxODkzNDU2MDAwfQ.sig";
        let without = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig";
        assert_eq!(expiry(with), Some(1_893_456_000));
        assert_eq!(expiry(without), None);
        assert_eq!(expiry("opaque"), None);
        assert_eq!(expiry("a.%%%.c"), None);
    }

    #[test]
    fn decodes_base64url() {
        assert_eq!(base64url("aGk").unwrap(), b"hi");
        assert_eq!(base64url("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64url("aGVsbG8gd29ybGQ").unwrap(), b"hello world");
    }

    #[test]
    fn renews_before_expiry() {
        let s = Duration::from_secs;
        assert_eq!(refresh_delay(s(3600), s(30)), s(3570));
        assert_eq!(refresh_delay(s(2), s(30)), Duration::from_millis(1600));
        assert_eq!(refresh_delay(Duration::ZERO, s(30)), Duration::ZERO);
    }
}
