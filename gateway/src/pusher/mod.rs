//! The Pusher-compatible door (docs/pusher.md): Pusher's Channels
//! protocol 7 at `/app/{key}`, into the same channels, ring and brokers as
//! the native protocol.
//!
//!
//! Its configuration (`[pusher]`, `[[pusher.apps]]`) is [`crate::config::pusher`].
//!
//! - [`channel`]: channel kinds by name, and how Pusher names map onto
//!   native channels in the app's namespace.
//! - [`signature`]: HMAC-SHA256 signatures, checked in constant time.
//! - [`request`]: the HTTP API's request signatures (key, timestamp,
//!   version, body MD5, signature).
//! - [`frame`]: client frames parsed, server frames encoded, and the
//!   envelope an event travels in through the brokers.
//! - [`cache`]: cache channels' last event, replayed on subscribe.
//! - [`members`]: a presence channel's users as one connection sees them.
//! - [`close`]: why a connection ends, with Pusher's codes.
//! - [`user`]: user ids, and each signed-in user's channel.
//! - [`session`]: one connection's state and how each frame is carried out.
//! - [`subscription_error`]: why a subscription was refused.
//! - [`door`]: the upgrade and the connection task.
//! - [`api`]: the HTTP API under `/apps/{id}/`.
//! - [`api_error`]: the HTTP API's errors, as Pusher answers them.

pub mod api;
pub mod api_error;
pub mod cache;
pub mod channel;
pub mod close;
pub mod door;
pub mod frame;
pub mod members;
pub mod request;
pub mod session;
pub mod signature;
pub mod subscription_error;
pub mod user;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use switchboard_core::Broker;

pub use crate::config::{PusherApp, PusherConfig, PusherConfigError};

use crate::gateway::Gateway;

/// The configured apps with their live connection counts.
pub struct Apps {
    apps: Vec<Arc<AppState>>,
    activity_timeout: Duration,
    pong_timeout: Duration,
}

/// One app and its connections at this gateway.
pub struct AppState {
    pub app: Arc<PusherApp>,
    connections: AtomicUsize,
}

impl Apps {
    pub fn new(config: &PusherConfig) -> Self {
        Self {
            apps: config
                .apps
                .iter()
                .map(|app| {
                    Arc::new(AppState {
                        app: Arc::new(app.clone()),
                        connections: AtomicUsize::new(0),
                    })
                })
                .collect(),
            activity_timeout: config.activity_timeout,
            pong_timeout: config.pong_timeout,
        }
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<AppState>> {
        self.apps.iter().find(|a| a.app.key == key)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<AppState>> {
        self.apps.iter().find(|a| a.app.id == id)
    }
}

impl AppState {
    /// Counts a connection unless the app is at `max_connections`.
    pub fn admit(self: &Arc<Self>) -> Option<AppSlot> {
        let max = self.app.max_connections;
        let before = self.connections.fetch_add(1, Ordering::Relaxed);
        if max > 0 && before >= max {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(AppSlot(self.clone()))
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Counts one connection of an app for as long as it lives.
pub struct AppSlot(Arc<AppState>);

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The door's routes: the WebSocket at `/app/{key}` and the HTTP API
/// under `/apps/{id}/`.
pub fn router<B: Broker>(gateway: Arc<Gateway<B>>) -> Router {
    let apps = Arc::new(Apps::new(&gateway.settings.pusher));
    Router::new()
        .route("/app/{key}", get(door::upgrade::<B>))
        .with_state((gateway.clone(), apps.clone()))
        .merge(api::router((gateway, apps)))
}
