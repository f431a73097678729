//! Per-namespace channel options.
//!
//! Options are looked up by the channel's namespace; the namespace `"*"`, if
//! configured, applies to every namespace that is not listed by name. A
//! channel whose namespace matches nothing is refused, so that a typo in a
//! channel name fails loudly instead of creating state nobody configured.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{BrokerError, ChannelName};

/// Options of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Keep a presence set (who is subscribed) for each channel.
    pub presence: bool,
    /// Send `join` and `leave` events to subscribers. Needs `presence`.
    pub join_leave: bool,
    /// Publications kept per channel for history and recovery; 0 disables history.
    pub history_size: usize,
    /// How long a publication stays in history.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Most bytes of history kept per channel (encoded publications plus
    /// a small overhead each); 0: no byte cap, only `history_size`.
    pub history_max_bytes: usize,
    /// Whether clients may publish (backends always may).
    pub allow_publish: bool,
    /// Whether a client may publish only to channels it is subscribed to
    /// (backends always may publish anywhere).
    pub publish_requires_subscription: bool,
    /// Whether the connection's token must carry a `channels` claim that
    /// matches the channel. Anonymous connections never have one.
    pub require_claim: bool,
    /// Most presence entries (subscribed clients) one channel keeps; a
    /// subscribe beyond it is refused (error 114). Bounds the broker's
    /// memory and every presence reply.
    pub presence_max_clients: usize,
    /// `join`/`leave` events are sent only while at most this many clients
    /// are present: each event goes to every subscriber, so events cost the
    /// square of the audience. Above it, subscribers page `presence`.
    pub join_leave_max_clients: usize,
}

/// Default of `history_max_bytes`: 1 MiB of history per channel.
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 1024 * 1024;
/// Default of [`NamespaceOptions::presence_max_clients`].
pub const PRESENCE_MAX_CLIENTS: usize = 10_000;
/// Default of [`NamespaceOptions::join_leave_max_clients`].
pub const JOIN_LEAVE_MAX_CLIENTS: usize = 100;

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            presence: false,
            join_leave: false,
            history_size: 0,
            history_ttl: Duration::from_secs(300),
            history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            allow_publish: false,
            publish_requires_subscription: false,
            require_claim: false,
            presence_max_clients: PRESENCE_MAX_CLIENTS,
            join_leave_max_clients: JOIN_LEAVE_MAX_CLIENTS,
        }
    }
}

impl NamespaceOptions {
    /// Everything on: the embedded `dev` default, so that a first try works
    /// without configuration.
    pub fn permissive() -> Self {
        Self {
            presence: true,
            join_leave: true,
            history_size: 300,
            history_ttl: Duration::from_secs(300),
            history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            allow_publish: true,
            publish_requires_subscription: false,
            require_claim: false,
            ..Self::default()
        }
    }

    /// Whether `join`/`leave` events go out while `present` clients are
    /// in the channel's presence (the one joining or leaving counted).
    pub fn join_leave_at(&self, present: usize) -> bool {
        self.presence && self.join_leave && present <= self.join_leave_max_clients
    }

    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

/// Options of personal channels (`#user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonalOptions {
    /// Subscribe every authenticated connection to its user's personal channel.
    pub enabled: bool,
    /// Whether clients may publish to another user's personal channel.
    pub allow_publish: bool,
    /// Whether clients may ask for presence of a personal channel (is a user online).
    pub presence: bool,
    /// Publications kept per personal channel; 0 disables history.
    pub history_size: usize,
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
}

impl Default for PersonalOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_publish: false,
            presence: false,
            history_size: 0,
            history_ttl: Duration::from_secs(300),
        }
    }
}

impl PersonalOptions {
    pub fn permissive() -> Self {
        Self {
            enabled: true,
            allow_publish: true,
            presence: true,
            history_size: 100,
            history_ttl: Duration::from_secs(300),
        }
    }

    /// Personal channels seen as a namespace: presence is always kept (it is
    /// how "is this user online" is answered), events never sent.
    fn as_namespace(&self) -> NamespaceOptions {
        NamespaceOptions {
            presence: true,
            join_leave: false,
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            allow_publish: self.allow_publish,
            publish_requires_subscription: false,
            require_claim: false,
            ..NamespaceOptions::default()
        }
    }
}

/// All namespaces, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Namespaces {
    /// Options by namespace name; `""` is the default namespace, `"*"` any other.
    pub namespaces: BTreeMap<String, NamespaceOptions>,
    pub personal: PersonalOptions,
}

impl Namespaces {
    /// Every namespace allowed, with presence, events and history.
    pub fn permissive() -> Self {
        Self {
            namespaces: BTreeMap::from([("*".to_owned(), NamespaceOptions::permissive())]),
            personal: PersonalOptions::permissive(),
        }
    }

    /// The options that govern `channel`.
    pub fn options(&self, channel: &ChannelName) -> Result<NamespaceOptions, BrokerError> {
        if channel.is_personal() {
            if !self.personal.enabled {
                return Err(BrokerError::UnknownNamespace);
            }
            return Ok(self.personal.as_namespace());
        }
        self.namespaces
            .get(channel.namespace())
            .or_else(|| self.namespaces.get("*"))
            .cloned()
            .ok_or(BrokerError::UnknownNamespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_falls_back_to_star() {
        let mut ns = Namespaces::default();
        assert_eq!(
            ns.options(&ChannelName::new("chat:a").unwrap()),
            Err(BrokerError::UnknownNamespace)
        );
        ns.namespaces.insert(
            "chat".into(),
            NamespaceOptions {
                presence: true,
                ..Default::default()
            },
        );
        ns.namespaces
            .insert("*".into(), NamespaceOptions::default());
        assert!(
            ns.options(&ChannelName::new("chat:a").unwrap())
                .unwrap()
                .presence
        );
        assert!(
            !ns.options(&ChannelName::new("news:a").unwrap())
                .unwrap()
                .presence
        );
        assert!(
            !ns.options(&ChannelName::new("lobby").unwrap())
                .unwrap()
                .presence
        );
    }

    #[test]
    fn personal_channels_always_keep_presence() {
        let ns = Namespaces::default();
        let opts = ns.options(&ChannelName::new("#bob").unwrap()).unwrap();
        assert!(opts.presence && !opts.join_leave && !opts.allow_publish);
    }
}
