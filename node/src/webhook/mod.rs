//! Pusher webhooks, sent by each channel's owner, so that every event is
//! sent once cluster-wide (docs/pusher.md, "Webhooks").
//!
//! The broker reports what it observes on an app's channels ([`Change`]);
//! [`Webhooks::notify`] turns it into Pusher's event JSON once and queues it
//! for each of the app's endpoints that wants that event type, without
//! waiting. One task per endpoint drives its [`outbox::Outbox`]: batches,
//! signed requests, retries with backoff, a bounded queue.
//!
//! - `event`: [`Change`] and the event JSON.
//! - [`outbox`]: one endpoint's queue, batches and retries (sans-IO).
//! - `delivery`: the endpoint's task and its signed HTTP requests.

mod delivery;
mod event;
pub mod outbox;

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use event::{Change, ClientEvent, EventType};
use switchboard_core::ChannelName;

/// Where one app's webhooks go (`[[pusher.apps.webhooks]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `http://` or `https://` (verified against Mozilla's roots).
    pub url: String,
    /// The events sent there; all of them if left out.
    #[serde(default = "all_event_types")]
    pub event_types: Vec<EventType>,
}

fn all_event_types() -> Vec<EventType> {
    EventType::ALL.to_vec()
}

/// How every endpoint is driven (`[pusher.webhooks]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Events waiting per endpoint; beyond it new events are dropped and
    /// counted.
    pub queue: usize,
    /// Most events in one request.
    pub batch_max: usize,
    /// Time one request may take (connect, TLS, response head).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a batch is retried (1 s, doubling to 60 s) before it is
    /// dropped and counted.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            queue: 10_000,
            batch_max: 100,
            timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(300),
        }
    }
}

/// One app's webhooks, as a broker needs them.
#[derive(Clone)]
pub struct WebhookApp {
    /// Sent as `X-Pusher-Key`.
    pub key: String,
    /// Signs each body (`X-Pusher-Signature`). Never logged.
    pub secret: String,
    /// The namespaces holding the app's channels: a channel
    /// `{namespace}:{name}` is the app's channel `{name}`.
    pub namespaces: Vec<String>,
    pub endpoints: Vec<Endpoint>,
}

/// Every app's webhooks and how they are sent: what a broker is given.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    pub apps: Vec<WebhookApp>,
    pub settings: WebhookSettings,
}

/// An event queued for an endpoint: encoded once, shared by every endpoint.
type Queued = Arc<serde_json::Value>;

struct Route {
    event_types: Vec<EventType>,
    queue: mpsc::Sender<Queued>,
    url: Arc<str>,
}

/// The broker's handle on its webhook endpoints. Cheap to clone.
#[derive(Clone, Default)]
pub struct Webhooks {
    /// Keyed by channel namespace.
    apps: Arc<HashMap<String, Arc<Vec<Route>>>>,
}

impl Webhooks {
    /// Starts one task per endpoint of `apps` in `tracker`, until
    /// `shutdown` (events still queued then are not sent).
    pub fn start(
        config: WebhookConfig,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Self {
        let WebhookConfig { apps, settings } = config;
        let settings = &settings;
        let mut by_namespace = HashMap::new();
        for app in apps {
            if app.endpoints.is_empty() {
                continue;
            }
            let signer = Arc::new(delivery::Signer::new(&app.key, &app.secret));
            let routes: Vec<Route> = app
                .endpoints
                .iter()
                .map(|endpoint| {
                    let (tx, rx) = mpsc::channel(settings.queue.clamp(1, 1024));
                    let task = delivery::Endpoint::new(endpoint, signer.clone(), settings);
                    tracker.spawn(task.run(rx, shutdown.clone()));
                    Route {
                        event_types: endpoint.event_types.clone(),
                        queue: tx,
                        url: endpoint.url.as_str().into(),
                    }
                })
                .collect();
            let routes = Arc::new(routes);
            for ns in app.namespaces {
                by_namespace.insert(ns, routes.clone());
            }
        }
        Self {
            apps: Arc::new(by_namespace),
        }
    }

    /// The endpoints of the app owning `channel`, and its Pusher name.
    fn routes<'a>(&self, channel: &'a ChannelName) -> Option<(&Arc<Vec<Route>>, &'a str)> {
        let (ns, name) = channel.as_str().split_once(':')?;
        Some((self.apps.get(ns)?, name))
    }

    /// Whether `channel` belongs to an app with webhooks.
    pub fn watches(&self, channel: &ChannelName) -> bool {
        self.routes(channel).is_some()
    }

    /// Whether an endpoint of `channel`'s app wants events of `kind`: the
    /// owner reads a publication as a client event only if one does (every
    /// publication passes here).
    pub fn wants(&self, channel: &ChannelName, kind: EventType) -> bool {
        self.routes(channel)
            .is_some_and(|(routes, _)| routes.iter().any(|r| r.event_types.contains(&kind)))
    }

    /// Queues `change` on `channel` for every endpoint that wants it; never
    /// waits. Member events only exist for presence channels.
    pub fn notify(&self, channel: &ChannelName, change: Change) {
        let Some((routes, name)) = self.routes(channel) else {
            return;
        };
        let member = matches!(
            change,
            Change::MemberAdded { .. } | Change::MemberRemoved { .. }
        );
        if member && !name.starts_with("presence-") {
            return;
        }
        let kind = change.event_type();
        let mut event = None;
        for route in routes.iter().filter(|r| r.event_types.contains(&kind)) {
            let event = event.get_or_insert_with(|| Arc::new(change.to_json(name)));
            if route.queue.try_send(event.clone()).is_err() {
                metrics::counter!("switchboard_webhook_events_total", "result" => "dropped_full")
                    .increment(1);
                tracing::debug!(url = %route.url, "webhook queue full: event dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_event_types_an_endpoint_asked_for_are_wanted() {
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        let app = WebhookApp {
            key: "k".into(),
            secret: "s".into(),
            namespaces: vec!["pusher.1".into()],
            endpoints: vec![Endpoint {
                url: "http://127.0.0.1:9/hooks".into(),
                event_types: vec![EventType::ChannelOccupied],
            }],
        };
        let config = WebhookConfig {
            apps: vec![app],
            settings: WebhookSettings::default(),
        };
        let hooks = Webhooks::start(config, &tracker, &stop);
        let app_channel = ChannelName::new("pusher.1:news").unwrap();
        let other = ChannelName::new("chat:news").unwrap();
        assert!(hooks.wants(&app_channel, EventType::ChannelOccupied));
        assert!(!hooks.wants(&app_channel, EventType::ClientEvent));
        assert!(!hooks.wants(&other, EventType::ChannelOccupied));
        assert!(hooks.watches(&app_channel) && !hooks.watches(&other));
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
