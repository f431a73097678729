//! Channel names.
//!
//! A channel is named like `chat:room1`; the part before the first `:` is its
//! namespace (`chat`), which selects its options. A name without `:` belongs
//! to the default namespace `""`. Names starting with `#` are personal
//! channels: `#alice` reaches every connection of user `alice`.

use std::{borrow::Borrow, fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize};

use crate::BrokerError;

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// The prefix of personal channels.
pub const PERSONAL_PREFIX: char = '#';

/// A validated channel name. Cheap to clone: the name is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates `name`: 1 to 255 bytes of ASCII letters, digits and
    /// `_ - : . @ = / # ! , +`, with `#` only as the first byte.
    ///
    /// The character set is kept narrow so that names are safe to log, to put
    /// in URLs and to use as metric labels without escaping.
    pub fn new(name: &str) -> Result<Self, BrokerError> {
        if name.is_empty() {
            return Err(BrokerError::InvalidChannel("empty"));
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(BrokerError::InvalidChannel("longer than 255 bytes"));
        }
        for (i, b) in name.bytes().enumerate() {
            let ok = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b':' | b'.' | b'@' | b'=' | b'/' | b'!' | b',' | b'+'
                )
                || (b == b'#' && i == 0);
            if !ok {
                return Err(BrokerError::InvalidChannel(
                    "contains a character outside [A-Za-z0-9_-:.@=/!,+] or a '#' after the start",
                ));
            }
        }
        if name == "#" {
            return Err(BrokerError::InvalidChannel(
                "personal channel without a user",
            ));
        }
        Ok(Self(name.into()))
    }

    /// The personal channel of `user`.
    pub fn personal(user: &str) -> Result<Self, BrokerError> {
        Self::new(&format!("{PERSONAL_PREFIX}{user}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, or `""`.
    pub fn namespace(&self) -> &str {
        if self.is_personal() {
            return "";
        }
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }

    pub fn is_personal(&self) -> bool {
        self.0.starts_with(PERSONAL_PREFIX)
    }

    /// For a personal channel, the user it belongs to.
    pub fn personal_user(&self) -> Option<&str> {
        self.0.strip_prefix(PERSONAL_PREFIX)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ChannelName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert_eq!(ChannelName::new("chat:room1").unwrap().namespace(), "chat");
        assert_eq!(ChannelName::new("chat:a:b").unwrap().namespace(), "chat");
        assert_eq!(ChannelName::new("lobby").unwrap().namespace(), "");
        let p = ChannelName::new("#alice").unwrap();
        assert!(p.is_personal());
        assert_eq!(p.personal_user(), Some("alice"));
        assert_eq!(p.namespace(), "");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "#",
            "a b",
            "chat:\u{e9}",
            "a#b",
            "x\n",
            &"a".repeat(256),
        ] {
            assert!(ChannelName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ChannelName::new(&"a".repeat(255)).is_ok());
    }
}
