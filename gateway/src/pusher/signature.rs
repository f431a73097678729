//! The signatures of Pusher's protocol: HMAC-SHA256 with the app secret,
//! hex-encoded, compared in constant time. The door checks the `auth` of a
//! private or presence subscription (`socket_id:channel[:channel_data]`)
//! and of a sign-in (`socket_id::user::user_data`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why an `auth` value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("auth must be \"<app key>:<signature>\"")]
    Malformed,
    #[error("auth names another app's key")]
    WrongKey,
    #[error("invalid signature")]
    Mismatch,
}

/// The lowercase hex HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &str, message: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(message.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// What a channel authorization signs.
pub fn channel_message(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// What a user sign-in signs.
pub fn signin_message(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Checks `auth` (`"<key>:<hex signature>"`) against `message`, signed
/// with the app's `key` and `secret`.
pub fn verify(key: &str, secret: &str, message: &str, auth: &str) -> Result<(), SignatureError> {
    let (given_key, given) = auth.split_once(':').ok_or(SignatureError::Malformed)?;
    if given_key != key {
        return Err(SignatureError::WrongKey);
    }
    let expected = sign(secret, message);
    // Lengths differ only for garbage; the comparison of equal lengths is
    // what must not leak how much of a guess was right.
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_example() {
        // Pusher's documentation example of a private channel signature.
        let sig = sign(
            "7ad3773142a6692b25b8",
            &channel_message("1234.1234", "private-foobar", None),
        );
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn verify_checks_key_and_signature() {
        let msg = channel_message("1.2", "presence-a", Some(r#"{"user_id":"u"}"#));
        let auth = format!("key:{}", sign("secret", &msg));
        assert_eq!(verify("key", "secret", &msg, &auth), Ok(()));
        assert_eq!(
            verify("other", "secret", &msg, &auth),
            Err(SignatureError::WrongKey)
        );
        assert_eq!(
            verify("key", "wrong", &msg, &auth),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("key", "secret", "1.2:presence-a", &auth),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("key", "secret", &msg, "nocolon"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("key", "secret", &msg, "key:abc"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn signin_message_shape() {
        assert_eq!(signin_message("1.2", "{}"), "1.2::user::{}");
    }
}
