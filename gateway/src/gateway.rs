//! The state one gateway shares with every connection and API call: its
//! settings, its broker, the local fan-out hub, the authenticator, and the
//! counters and tokens that the server uses to admit and drain connections.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_core::Broker;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{auth::Authenticator, config::Settings, hub::Hub, telemetry};

/// State shared by every connection of one gateway.
pub struct Gateway<B: Broker> {
    pub settings: Settings,
    pub broker: B,
    pub hub: Arc<Hub>,
    pub auth: Authenticator,
    /// When this gateway started serving, for the API's `info`.
    pub started: Instant,
    next_conn: AtomicU64,
    connections: AtomicUsize,
    ready: AtomicBool,
    metrics: PrometheusHandle,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// What a gateway is made of besides its settings and broker: the server
/// assembles these before it starts serving.
pub(crate) struct Parts {
    pub(crate) hub: Arc<Hub>,
    pub(crate) auth: Authenticator,
    pub(crate) metrics: PrometheusHandle,
    /// Where connection tasks run, so that the drain can wait for them.
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl<B: Broker> Gateway<B> {
    /// A gateway that is ready and has no connections yet.
    pub(crate) fn new(settings: Settings, broker: B, parts: Parts) -> Self {
        Self {
            settings,
            broker,
            hub: parts.hub,
            auth: parts.auth,
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            ready: AtomicBool::new(true),
            metrics: parts.metrics,
            tracker: parts.tracker,
            shutdown: parts.shutdown,
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a new connection, unless the gateway is at
    /// `max_connections`; the count drops when the slot does.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<ConnectionSlot<B>> {
        let max = self.settings.gateway.limits.max_connections;
        if self.connections.fetch_add(1, Ordering::Relaxed) >= max {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        telemetry::connection_opened();
        Some(ConnectionSlot(self.clone()))
    }

    /// False once the gateway drains: `/readyz` then turns load balancers away.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of this process's metrics.
    pub(crate) fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    /// Where connection tasks are spawned, so that the drain waits for them.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Cancelled when the gateway shuts down.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn ws_config(&self) -> WebSocketConfig {
        let max = self.settings.gateway.limits.max_message_bytes;
        // Small buffers: the read buffer is allocated per connection up
        // front (tungstenite's default is 128 KiB), and tungstenite
        // zero-fills it before every read attempt, which is each time the
        // connection wakes up, deliveries included. 256 bytes hold a
        // typical request (a frame's header tells its length, and the
        // buffer grows to fit a longer one); each idle connection holds
        // it, so every byte here counts 20,000 times over. The
        // write buffer only needs to gather one batch of frames before a
        // flush. Its cap stays unlimited: what is written is already
        // bounded by the outbound queue and the write batch, and a cap
        // would refuse any single reply (a long history page) larger than
        // itself.
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(16 * 1024)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }
}

/// Bytes of each connection's WebSocket read buffer (see `ws_config`).
const READ_BUFFER: usize = 256;

/// Counts a connection for as long as it lives.
pub(crate) struct ConnectionSlot<B: Broker>(Arc<Gateway<B>>);

impl<B: Broker> Drop for ConnectionSlot<B> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        telemetry::connection_closed();
    }
}
