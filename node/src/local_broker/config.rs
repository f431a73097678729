//! [`BrokerConfig`]: a broker's own settings.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// Default of `memory_budget_bytes`: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's name, shown by the server API's `info`.
    pub name: String,
    /// How often idle channels and expired history are swept.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long a client's idempotency key is remembered; `0s` disables
    /// deduplication of clients' keys (gateways' own keys are kept for
    /// [`crate::idempotency::GATEWAY_KEY_WINDOW`] regardless).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Most clients' idempotency keys remembered at once, and apart from
    /// them most gateways' keys; beyond it the oldest of that kind are
    /// forgotten before their window ends.
    pub idempotency_max_keys: usize,
    /// Bytes this broker's channels, history, presence and idempotency
    /// keys may take (estimated, docs/operations.md "Memory budget"); once
    /// spent, new channels are refused (code 115) and history stops
    /// growing. 0: no budget.
    pub memory_budget_bytes: usize,
    /// How long a stopping broker (`switchboard node`) may take to hand its
    /// channels over and see its gateways go before it stops anyway.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Where this broker keeps what must survive a restart: its
    /// replication votes (docs/replication.md). Without one it votes for
    /// nobody, so it can be neither a voter nor a data replica.
    pub data_dir: Option<PathBuf>,
    /// Brokers that store each channel (1 to 3; default 2): with 2 or
    /// more, a publication is acknowledged once every one of them stored
    /// it, and a follower takes over in the same epoch
    /// (docs/replication.md). 2 or more needs `data_dir`: a broker without
    /// one refuses to start unless told 1.
    pub replication_factor: usize,
    /// With 2 or more: what this broker does with a channel it is asked
    /// for when no majority of the channel's voters, or fewer than
    /// `replication_factor` brokers, are reachable from it (its peers died,
    /// or a partition cut it off: it cannot tell which). `refuse` (the
    /// default) refuses it until they are back; `serve` serves it
    /// unreplicated, and what is acknowledged on a partition's cut-off side
    /// is lost when it heals (docs/replication.md "A lost majority").
    pub lost_majority: switchboard_cluster::replication::LostMajority,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            name: "broker-1".into(),
            sweep_interval: Duration::from_secs(1),
            idempotency_window: Duration::from_secs(300),
            idempotency_max_keys: 100_000,
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            drain_timeout: Duration::from_secs(10),
            data_dir: None,
            replication_factor: 2,
            lost_majority: Default::default(),
        }
    }
}
