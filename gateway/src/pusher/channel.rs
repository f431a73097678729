//! Pusher channel names: their kind (public, private, encrypted, presence)
//! and where they live on the ring.
//!
//! The channel `{name}` of app `{id}` is the native channel
//! `pusher.{id}:{name}`; presence channels are in `pusher.{id}.presence`,
//! cache channels in `pusher.{id}.cache` and presence cache channels in
//! `pusher.{id}.presence.cache`: the namespace before the `:` is the app's
//! own, so apps never share a channel, and the ring places each channel by
//! its full name like any native one. Presence and cache channels get
//! namespaces of their own because only they send join and leave events or
//! keep their last event.

use switchboard_core::{ChannelName, channel::MAX_CHANNEL_LEN};

/// Longest Pusher channel name accepted, in bytes (Pusher's own limit).
pub const MAX_NAME_LEN: usize = 164;

/// What a channel's name makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    /// `private-`: subscribing needs the app's signature.
    Private,
    /// `private-encrypted-`: private, and its payloads are end-to-end
    /// encrypted by the clients; the server routes them untouched.
    Encrypted,
    /// `presence-`: private, with members.
    Presence,
}

impl ChannelKind {
    /// The kind of the channel `name`.
    pub fn of(name: &str) -> Self {
        if name.starts_with("presence-") {
            Self::Presence
        } else if name.starts_with("private-encrypted-") {
            Self::Encrypted
        } else if name.starts_with("private-") {
            Self::Private
        } else {
            Self::Public
        }
    }

    /// Subscribing needs a signature from the app's auth endpoint.
    pub fn needs_auth(self) -> bool {
        self != Self::Public
    }

    /// Clients may send `client-*` events on it (where the app allows).
    /// Not on encrypted channels: pusher-js refuses to send them there, and
    /// the server refuses them as well.
    pub fn allows_client_events(self) -> bool {
        matches!(self, Self::Private | Self::Presence)
    }
}

/// Why a channel name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("channel name is empty or longer than 164 characters")]
    Length,
    #[error("channel name may only contain [A-Za-z0-9_-=@,.]")]
    Character,
}

/// Whether `name` is a cache channel (`cache-`, `private-cache-`,
/// `private-encrypted-cache-`, `presence-cache-`): it keeps its last event
/// and replays it to each new subscriber.
pub fn is_cache(name: &str) -> bool {
    [
        "cache-",
        "private-cache-",
        "private-encrypted-cache-",
        "presence-cache-",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A Pusher channel name checked and placed in its app's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherChannel {
    /// As the client names it.
    pub name: String,
    pub kind: ChannelKind,
    pub cache: bool,
    /// As the ring and brokers name it.
    pub native: ChannelName,
}

impl PusherChannel {
    /// Checks `name` and maps it into app `app_id`'s namespace. Pusher also
    /// allows `;` in names; the native name set has no room for it, so it is
    /// refused here (docs/pusher.md).
    pub fn new(app_id: &str, name: &str) -> Result<Self, NameError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(NameError::Length);
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-=@,.".contains(&b);
        if !name.bytes().all(allowed) {
            return Err(NameError::Character);
        }
        let kind = ChannelKind::of(name);
        let cache = is_cache(name);
        let native = format!("{}:{name}", namespace(app_id, kind, cache));
        debug_assert!(native.len() <= MAX_CHANNEL_LEN);
        let native = ChannelName::new(&native).map_err(|_| NameError::Character)?;
        Ok(Self {
            name: name.to_owned(),
            kind,
            cache,
            native,
        })
    }

    /// The Pusher name of a native channel of app `app_id`, if it is one.
    pub fn name_of<'a>(app_id: &str, native: &'a ChannelName) -> Option<&'a str> {
        let (ns, name) = native.as_str().split_once(':')?;
        (ns == namespace(app_id, ChannelKind::of(name), is_cache(name))).then_some(name)
    }
}

/// The namespace of app `app_id`'s channels of `kind`, cache channels or not.
pub fn namespace(app_id: &str, kind: ChannelKind, cache: bool) -> String {
    crate::config::pusher::namespace(app_id, kind == ChannelKind::Presence, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_comes_from_the_prefix() {
        assert_eq!(ChannelKind::of("chat"), ChannelKind::Public);
        assert_eq!(ChannelKind::of("private-a"), ChannelKind::Private);
        assert_eq!(
            ChannelKind::of("private-encrypted-a"),
            ChannelKind::Encrypted
        );
        assert_eq!(ChannelKind::of("presence-a"), ChannelKind::Presence);
        assert_eq!(ChannelKind::of("privatea"), ChannelKind::Public);
        assert!(!ChannelKind::Public.needs_auth() && ChannelKind::Encrypted.needs_auth());
        assert!(ChannelKind::Private.allows_client_events());
        assert!(ChannelKind::Presence.allows_client_events());
        assert!(!ChannelKind::Encrypted.allows_client_events());
        assert!(!ChannelKind::Public.allows_client_events());
    }

    #[test]
    fn names_map_into_the_apps_namespace_and_back() {
        let c = PusherChannel::new("app1", "presence-room").unwrap();
        assert_eq!(c.native.as_str(), "pusher.app1.presence:presence-room");
        assert_eq!(c.native.namespace(), "pusher.app1.presence");
        assert_eq!(
            PusherChannel::name_of("app1", &c.native),
            Some("presence-room")
        );
        assert_eq!(PusherChannel::name_of("app2", &c.native), None);
        let c = PusherChannel::new("app1", "private-a.b=c@d,e_f-g").unwrap();
        assert_eq!(c.native.as_str(), "pusher.app1:private-a.b=c@d,e_f-g");
        assert_eq!(
            PusherChannel::name_of("app1", &c.native),
            Some("private-a.b=c@d,e_f-g")
        );
        // A public channel named like a presence one cannot be forged into
        // the presence namespace, nor the other way round.
        let forged = ChannelName::new("pusher.app1:presence-room").unwrap();
        assert_eq!(PusherChannel::name_of("app1", &forged), None);
    }

    #[test]
    fn cache_channels_keep_their_kind_in_a_namespace_of_their_own() {
        let c = PusherChannel::new("7", "presence-cache-r").unwrap();
        assert!(c.cache && c.kind == ChannelKind::Presence);
        assert_eq!(
            c.native.as_str(),
            "pusher.7.presence.cache:presence-cache-r"
        );
        let c = PusherChannel::new("7", "private-encrypted-cache-x").unwrap();
        assert!(c.cache && c.kind == ChannelKind::Encrypted);
        assert_eq!(
            PusherChannel::name_of("7", &c.native),
            Some("private-encrypted-cache-x")
        );
        assert!(!PusherChannel::new("7", "cachex").unwrap().cache);
        let forged = ChannelName::new("pusher.7:cache-a").unwrap();
        assert_eq!(PusherChannel::name_of("7", &forged), None);
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(PusherChannel::new("a", ""), Err(NameError::Length));
        assert_eq!(
            PusherChannel::new("a", &"x".repeat(165)),
            Err(NameError::Length)
        );
        assert!(PusherChannel::new("a", &"x".repeat(164)).is_ok());
        for bad in ["a:b", "a;b", "a b", "#a", "a/b"] {
            assert_eq!(
                PusherChannel::new("a", bad),
                Err(NameError::Character),
                "{bad}"
            );
        }
    }
}
