//! Metrics: names, the Prometheus recorder, and the few helpers the hot
//! path calls. Names follow Prometheus conventions (`_total` counters,
//! base units).

use std::{sync::OnceLock, time::Duration};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "switchboard_connections";
pub const CONNECTIONS_ACCEPTED: &str = "switchboard_connections_accepted_total";
pub const SUBSCRIPTIONS: &str = "switchboard_subscriptions";
pub const MESSAGES_IN: &str = "switchboard_messages_received_total";
pub const MESSAGES_OUT: &str = "switchboard_messages_sent_total";
pub const ERRORS: &str = "switchboard_errors_total";
pub const DISCONNECTS: &str = "switchboard_disconnects_total";
pub const QUEUE_DROPS: &str = "switchboard_queue_drops_total";
pub const DELIVERY_LATENCY: &str = "switchboard_publish_delivery_latency_seconds";
pub const API_REQUESTS: &str = "switchboard_api_requests_total";
pub const SOCKETS: &str = "switchboard_sockets";
pub const LIMITED: &str = "switchboard_limited_total";
pub const STALE_DELIVERIES: &str = "switchboard_gateway_stale_term_deliveries_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle. The
/// caller must drive [`upkeep`] so histograms do not grow between scrapes.
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), &buckets)
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                // Another recorder (a test harness, an embedding app) is
                // already global: render our own, unconnected registry
                // rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Drains histogram samples into buckets until `shutdown`.
pub async fn upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open client WebSocket connections.");
    describe_counter!(
        CONNECTIONS_ACCEPTED,
        "Client WebSocket connections accepted."
    );
    describe_gauge!(SUBSCRIPTIONS, "Client channel subscriptions.");
    describe_counter!(MESSAGES_IN, "Frames received from clients.");
    describe_counter!(MESSAGES_OUT, "Frames sent to clients.");
    describe_counter!(ERRORS, "Error frames sent to clients, by error.");
    describe_counter!(DISCONNECTS, "Connections ended by the server, by reason.");
    describe_counter!(
        QUEUE_DROPS,
        "Connections dropped because their outbound queue overflowed."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Time from the owner accepting a publication to its frame being written to a subscriber's socket."
    );
    describe_counter!(
        API_REQUESTS,
        "Server API calls (HTTP and gRPC), by call and outcome (`ok` or the error code)."
    );
    describe_gauge!(
        SOCKETS,
        "Accepted sockets (WebSocket, HTTP/1, HTTP/2, API), counted against limits.max_sockets."
    );
    describe_counter!(
        LIMITED,
        "Sockets refused or closed and API requests refused by a limit, by limit."
    );
    describe_counter!(
        STALE_DELIVERIES,
        "Deliveries refused because they came from a copy of an older replication term than this gateway has seen in the channel's epoch."
    );
    describe_counter!(
        "switchboard_broker_idempotent_retries_total",
        "Publishes answered from the idempotency window instead of being published again."
    );
    describe_gauge!(
        "switchboard_broker_channels",
        "Channels with state at this broker."
    );
    describe_counter!(
        "switchboard_broker_publications_total",
        "Publications accepted by this broker."
    );
    describe_counter!(
        "switchboard_gossip_packets_rejected_total",
        "Gossip packets dropped unparsed: no key in the keyring opens them (auth), or not sealed packets (malformed)."
    );
    describe_counter!(
        "switchboard_gossip_identity_conflicts_total",
        "Gossip members refused because another live member holds their name."
    );
    // Registered at zero so that dashboards and alerts see every series
    // from the first scrape, not only after the first event.
    gauge!(CONNECTIONS).set(0.0);
    gauge!(SUBSCRIPTIONS).set(0.0);
    gauge!(SOCKETS).set(0.0);
    for name in [
        CONNECTIONS_ACCEPTED,
        MESSAGES_IN,
        MESSAGES_OUT,
        QUEUE_DROPS,
        "switchboard_broker_publications_total",
    ] {
        counter!(name).absolute(0);
    }
}

pub fn api_call(call: &'static str, outcome: &'static str) {
    counter!(API_REQUESTS, "call" => call, "outcome" => outcome).increment(1);
}

/// One act of the limit labelled `limit`.
pub fn refused(limit: &'static str) {
    counter!(LIMITED, "limit" => limit).increment(1);
}

pub fn sockets(delta: f64) {
    gauge!(SOCKETS).increment(delta);
}

pub fn queue_drop() {
    counter!(QUEUE_DROPS).increment(1);
}

pub fn error(label: &'static str, code: u16) {
    counter!(ERRORS, "error" => label, "code" => code.to_string()).increment(1);
}

pub fn disconnect(label: &'static str) {
    counter!(DISCONNECTS, "reason" => label).increment(1);
}

pub fn connection_opened() {
    counter!(CONNECTIONS_ACCEPTED).increment(1);
    gauge!(CONNECTIONS).increment(1.0);
}

pub fn connection_closed() {
    gauge!(CONNECTIONS).decrement(1.0);
}

pub fn subscriptions(delta: f64) {
    gauge!(SUBSCRIPTIONS).increment(delta);
}

/// Handles of the metrics every frame touches, looked up once. The macros
/// look a metric up in the recorder's registry on each call (hashing its
/// name, a read lock, reference counts bumped and dropped): per delivered
/// frame that was a good part of the gateway's own work. Taken on first
/// use, which comes after [`recorder`] installed the recorder.
struct HotMetrics {
    messages_in: Counter,
    messages_out: Counter,
    delivery_latency: Histogram,
}

fn hot() -> &'static HotMetrics {
    static HOT: OnceLock<HotMetrics> = OnceLock::new();
    HOT.get_or_init(|| {
        // Handles taken before the recorder is installed would stay no-ops.
        recorder();
        HotMetrics {
            messages_in: counter!(MESSAGES_IN),
            messages_out: counter!(MESSAGES_OUT),
            delivery_latency: histogram!(DELIVERY_LATENCY),
        }
    })
}

pub fn received() {
    hot().messages_in.increment(1);
}

pub fn sent(n: u64) {
    hot().messages_out.increment(n);
}

pub fn delivery_latency(seconds: f64) {
    hot().delivery_latency.record(seconds);
}
