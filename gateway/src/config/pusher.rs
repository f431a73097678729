//! The Pusher door's configuration (`[pusher]`, `[[pusher.apps]]`):
//! credentials, options and limits, each with its default, and the
//! namespaces that hold each app's channels on the ring (the door itself is
//! [`crate::pusher`]).

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};
use switchboard_core::NamespaceOptions;
use switchboard_node::webhook::{Endpoint, WebhookApp, WebhookConfig, WebhookSettings};
use thiserror::Error;

/// The Pusher-compatible door (`[pusher]`, docs/pusher.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// The apps served; none: `/app/{key}` refuses every key (4001).
    pub apps: Vec<PusherApp>,
    /// Told to clients in `pusher:connection_established`: after this long
    /// without traffic the client sends `pusher:ping`. The server pings a
    /// client silent for this long, and closes (4201) one that stays silent
    /// for `pong_timeout` more.
    #[serde(with = "humantime_serde")]
    pub activity_timeout: Duration,
    /// How long a pinged client has to answer before it is closed with 4201.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// How every app's webhooks are queued, batched and retried.
    pub webhooks: WebhookSettings,
}

impl Default for PusherConfig {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            webhooks: WebhookSettings::default(),
        }
    }
}

/// One app: what Pusher's dashboard calls app id, key and secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherApp {
    /// The app id of the HTTP API's paths (`/apps/{id}/…`); also names the
    /// app's namespaces, so `[A-Za-z0-9_-]`, at most 64 bytes.
    pub id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// Signs channel authorizations and API requests. A secret: never logged.
    pub secret: String,
    /// Whether clients may send `client-*` events on private and presence
    /// channels.
    pub enable_client_messages: bool,
    /// Connections of this app at one gateway; beyond it 4100. 0: only the
    /// gateway's own `max_connections` applies.
    pub max_connections: usize,
    /// Largest `data` of one event (client event or API trigger), in bytes.
    pub max_event_bytes: usize,
    /// Client events one connection may send per second (4301 beyond).
    pub client_events_per_second: u32,
    /// Users in one presence channel; a subscription beyond it is refused.
    pub max_presence_members: usize,
    /// Largest `user_info` of a presence member, in bytes of JSON text.
    pub max_presence_user_info_bytes: usize,
    /// Where the owner of each of the app's channels sends its webhooks
    /// (`[[pusher.apps.webhooks]]`: `url`, `event_types`).
    pub webhooks: Vec<Endpoint>,
}

impl Default for PusherApp {
    fn default() -> Self {
        Self {
            id: String::new(),
            key: String::new(),
            secret: String::new(),
            enable_client_messages: false,
            max_connections: 0,
            max_event_bytes: 10 * 1024,
            client_events_per_second: 10,
            max_presence_members: 100,
            max_presence_user_info_bytes: 1024,
            webhooks: Vec::new(),
        }
    }
}

impl fmt::Debug for PusherApp {
    // The secret never reaches logs or panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PusherApp")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .field("enable_client_messages", &self.enable_client_messages)
            .field("max_connections", &self.max_connections)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("webhooks", &self.webhooks.len())
            .finish_non_exhaustive()
    }
}

/// A configuration the door cannot serve.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PusherConfigError {
    #[error("pusher app id {0:?} must be 1 to 64 bytes of [A-Za-z0-9_-]")]
    InvalidId(String),
    #[error("pusher app {0:?} needs a key and a secret")]
    MissingCredentials(String),
    #[error("pusher app id {0:?} is configured twice")]
    DuplicateId(String),
    #[error("pusher app key of app {0:?} is used by another app")]
    DuplicateKey(String),
}

impl PusherConfig {
    /// Checks ids, keys and secrets.
    pub fn validate(&self) -> Result<(), PusherConfigError> {
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for app in &self.apps {
            let id_ok = !app.id.is_empty()
                && app.id.len() <= 64
                && app
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(PusherConfigError::InvalidId(app.id.clone()));
            }
            if app.key.is_empty() || app.secret.is_empty() {
                return Err(PusherConfigError::MissingCredentials(app.id.clone()));
            }
            if !ids.insert(app.id.as_str()) {
                return Err(PusherConfigError::DuplicateId(app.id.clone()));
            }
            if !keys.insert(app.key.as_str()) {
                return Err(PusherConfigError::DuplicateKey(app.id.clone()));
            }
        }
        Ok(())
    }

    /// What a broker needs to send every app's webhooks: the namespaces
    /// of each app's channels (not the users' namespace: it has no
    /// subscribers of its own) and where to send.
    pub fn webhook_config(&self) -> WebhookConfig {
        let apps = self
            .apps
            .iter()
            .filter(|app| !app.webhooks.is_empty())
            .map(|app| WebhookApp {
                key: app.key.clone(),
                secret: app.secret.clone(),
                namespaces: [(false, false), (false, true), (true, false), (true, true)]
                    .into_iter()
                    .map(|(presence, cache)| namespace(&app.id, presence, cache))
                    .collect(),
                endpoints: app.webhooks.clone(),
            })
            .collect();
        WebhookConfig {
            apps,
            settings: self.webhooks.clone(),
        }
    }

    pub fn by_key(&self, key: &str) -> Option<&PusherApp> {
        self.apps.iter().find(|a| a.key == key)
    }

    pub fn by_id(&self, id: &str) -> Option<&PusherApp> {
        self.apps.iter().find(|a| a.id == id)
    }

    /// The namespaces of every app's channels, for the gateways' and the
    /// brokers' namespace tables: both must know them (the brokers keep
    /// presence and send join/leave by them).
    pub fn namespaces(&self) -> BTreeMap<String, NamespaceOptions> {
        let mut all = BTreeMap::new();
        for app in &self.apps {
            for presence in [false, true] {
                for cache in [false, true] {
                    all.insert(
                        namespace(&app.id, presence, cache),
                        namespace_options(presence, cache),
                    );
                }
            }
            // Signed-in users' connections, for terminate_connections.
            all.insert(
                users_namespace(&app.id),
                NamespaceOptions {
                    presence: false,
                    ..namespace_options(false, false)
                },
            );
        }
        all
    }
}

/// Every channel keeps presence, so that the HTTP API can count its
/// subscribers; only presence channels send join and leave; cache channels
/// keep their last event, for whoever subscribes next. Native clients
/// need a token claim for any of them and never publish: what reaches a
/// Pusher client went through the door's own checks.
fn namespace_options(presence_channels: bool, cache: bool) -> NamespaceOptions {
    NamespaceOptions {
        presence: true,
        join_leave: presence_channels,
        history_size: usize::from(cache),
        history_ttl: CACHE_TTL,
        history_max_bytes: switchboard_core::namespace::DEFAULT_HISTORY_MAX_BYTES,
        allow_publish: false,
        publish_requires_subscription: false,
        require_claim: true,
        // A presence channel's roster is read whole, in one page, and
        // kept current by join and leave: both stop at its member limit.
        presence_max_clients: if presence_channels {
            MAX_PRESENCE_MEMBERS
        } else {
            switchboard_core::namespace::PRESENCE_MAX_CLIENTS
        },
        join_leave_max_clients: MAX_PRESENCE_MEMBERS,
    }
}

/// Connections a Pusher presence channel holds (Pusher's own limit is 100
/// members): one page of presence (`switchboard_core::presence::MAX_PAGE`).
pub const MAX_PRESENCE_MEMBERS: usize = switchboard_core::presence::MAX_PAGE;

/// How long a cache channel keeps its last event (Pusher's 30 minutes).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// The namespace of app `app_id`'s channels: presence channels and cache
/// channels each have their own (docs/pusher.md).
pub fn namespace(app_id: &str, presence_channels: bool, cache: bool) -> String {
    let presence = if presence_channels { ".presence" } else { "" };
    let cache = if cache { ".cache" } else { "" };
    format!("pusher.{app_id}{presence}{cache}")
}

/// The namespace with one channel per signed-in user of app `app_id`.
pub fn users_namespace(app_id: &str) -> String {
    format!("pusher.{app_id}.users")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, key: &str) -> PusherApp {
        PusherApp {
            id: id.into(),
            key: key.into(),
            secret: "s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_refuses_bad_ids_and_duplicates() {
        let mut c = PusherConfig {
            apps: vec![app("a1", "k1"), app("a2", "k2")],
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
        c.apps.push(app("a1", "k3"));
        assert_eq!(
            c.validate(),
            Err(PusherConfigError::DuplicateId("a1".into()))
        );
        c.apps[2] = app("a3", "k1");
        assert_eq!(
            c.validate(),
            Err(PusherConfigError::DuplicateKey("a3".into()))
        );
        c.apps[2] = app("a:3", "k3");
        assert!(matches!(c.validate(), Err(PusherConfigError::InvalidId(_))));
        c.apps[2] = PusherApp {
            secret: String::new(),
            ..app("a3", "k3")
        };
        assert!(matches!(
            c.validate(),
            Err(PusherConfigError::MissingCredentials(_))
        ));
    }

    #[test]
    fn each_app_has_its_own_namespaces() {
        let c = PusherConfig {
            apps: vec![app("a1", "k1"), app("a2", "k2")],
            ..Default::default()
        };
        let ns = c.namespaces();
        assert_eq!(
            ns.keys().collect::<Vec<_>>(),
            [
                "pusher.a1",
                "pusher.a1.cache",
                "pusher.a1.presence",
                "pusher.a1.presence.cache",
                "pusher.a1.users",
                "pusher.a2",
                "pusher.a2.cache",
                "pusher.a2.presence",
                "pusher.a2.presence.cache",
                "pusher.a2.users"
            ]
        );
        assert!(ns["pusher.a1.presence"].join_leave && !ns["pusher.a1"].join_leave);
        assert!(!ns["pusher.a1.users"].presence);
        assert!(ns["pusher.a1.presence.cache"].join_leave);
        assert_eq!(ns["pusher.a1.cache"].history_size, 1);
        assert_eq!(ns["pusher.a1"].history_size, 0);
        assert!(ns.values().all(|o| o.require_claim && !o.allow_publish));
    }

    #[test]
    fn debug_hides_the_secret() {
        let a = PusherApp {
            secret: "hunter2".into(),
            ..app("a", "k")
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
