//! What a benchmark run does: how many connections from which source
//! addresses, which connection subscribes to which channel, who publishes
//! where and how fast. Pure arithmetic, decided before any socket opens.

use std::{
    net::{AddrParseError, Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::Serialize;

use super::payload::MIN_PAYLOAD;

/// Most subscriptions one connection may hold (the server's default
/// `max_channels_per_connection`).
pub const MAX_CHANNELS_PER_CONNECTION: usize = 128;

/// Source addresses stay below this many connections each: one address
/// pair has about 28k ephemeral ports (32768-60999).
pub const CONNECTIONS_PER_SOURCE: usize = 20_000;

/// The command line of `switchboard bench`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Plan {
    /// The WebSocket URL of the gateway (or `switchboard dev`).
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    pub url: String,
    /// Subscriber connections to open (publishers come on top).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,
    /// How many 127.0.0.x source addresses to spread the connections over
    /// (127.0.0.1, 127.0.0.2, …) [default: enough for 20k connections each,
    /// at least 2].
    #[arg(long)]
    pub sources: Option<usize>,
    /// Channels to publish to; 0 for an idle run (connections only).
    #[arg(long, default_value_t = 0)]
    pub channels: usize,
    /// Subscribers per channel, each on a different connection.
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
    /// Publications per second over all channels, sent on a fixed schedule
    /// whether or not deliveries keep up (open loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Size of each publication's `data` in bytes (at least 48: the
    /// timestamp and sequence number need room).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Publisher connections; each publishes to every P-th channel. Keep
    /// rate/publishers under the server's per-connection rate limit
    /// (`limits.rate_per_second`, 50 in the dev config) [default: one per
    /// channel].
    #[arg(long)]
    pub publishers: Option<usize>,
    /// How long to publish (or, for an idle run, to hold the connections).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_secs")]
    pub duration: Duration,
    /// Pause after connecting and after subscribing, before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_secs")]
    pub settle: Duration,
    /// Longest wait for deliveries still in flight after publishing stops.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_secs")]
    pub drain: Duration,
    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Channel names are this prefix and the channel's number.
    #[arg(long, default_value = "bench:")]
    pub channel_prefix: String,
    /// Sign an HS256 token per connection (user `bench-N`) with this
    /// secret; without it, connections are anonymous.
    #[arg(long, env = "SWITCHBOARD_HMAC_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub secret: Option<String>,
    /// Offer the `switchboard.batch` subprotocol on every connection: the
    /// server may then send several messages per frame.
    #[arg(long)]
    pub batch: bool,
    /// Server processes whose memory and CPU to report (repeat for a
    /// gateway and its broker) [default: the process listening on the
    /// URL's port].
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
}

/// `Duration`s as seconds in the JSON summary.
mod humantime_secs {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Why a plan cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the URL must start with ws://")]
    NotWebSocket,
    #[error("the URL's host must be IP:PORT, got {authority:?}")]
    Host {
        authority: String,
        #[source]
        error: AddrParseError,
    },
    #[error("--connections must be at least 1")]
    NoConnections,
    #[error(
        "--subscribers ({subscribers}) cannot exceed --connections ({connections}): each subscriber of a channel is its own connection"
    )]
    SubscribersOverConnections {
        subscribers: usize,
        connections: usize,
    },
    #[error(
        "{per_connection} subscriptions per connection exceed the server's {max}: add connections",
        max = MAX_CHANNELS_PER_CONNECTION
    )]
    ChannelsPerConnection { per_connection: usize },
    #[error("--payload must be at least {min} bytes", min = MIN_PAYLOAD)]
    PayloadTooSmall,
    #[error("--rate must be a non-negative number")]
    Rate,
    #[error("--sources must be 1 to 254")]
    Sources,
}

/// The plan checked and worked out.
#[derive(Debug, Clone)]
pub struct Layout {
    pub server: SocketAddr,
    pub sources: Vec<Ipv4Addr>,
    pub publishers: usize,
}

impl Plan {
    /// Checks the plan and works out addresses and the publisher count.
    pub fn layout(&self) -> Result<Layout, PlanError> {
        let rest = self
            .url
            .strip_prefix("ws://")
            .ok_or(PlanError::NotWebSocket)?;
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let server: SocketAddr = authority.parse().map_err(|error| PlanError::Host {
            authority: authority.to_owned(),
            error,
        })?;
        if self.connections == 0 {
            return Err(PlanError::NoConnections);
        }
        if self.channels > 0 {
            self.check_publishing()?;
        }
        let wanted = self.sources.unwrap_or_else(|| {
            self.total_connections()
                .div_ceil(CONNECTIONS_PER_SOURCE)
                .max(2)
        });
        if wanted == 0 || wanted > 254 {
            return Err(PlanError::Sources);
        }
        let sources = (1..=wanted as u8)
            .map(|i| Ipv4Addr::new(127, 0, 0, i))
            .collect();
        let publishers = match self.publishers {
            _ if self.channels == 0 || self.rate == 0.0 => 0,
            Some(p) => p.clamp(1, self.channels),
            None => self.channels,
        };
        Ok(Layout {
            server,
            sources,
            publishers,
        })
    }

    /// Checks what a run with channels needs on top.
    fn check_publishing(&self) -> Result<(), PlanError> {
        if self.subscribers > self.connections {
            return Err(PlanError::SubscribersOverConnections {
                subscribers: self.subscribers,
                connections: self.connections,
            });
        }
        let per_connection = self.subscriptions().div_ceil(self.connections);
        if per_connection > MAX_CHANNELS_PER_CONNECTION {
            return Err(PlanError::ChannelsPerConnection { per_connection });
        }
        if self.payload < MIN_PAYLOAD {
            return Err(PlanError::PayloadTooSmall);
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(PlanError::Rate);
        }
        Ok(())
    }

    /// Subscriptions in all: channels times subscribers per channel.
    pub fn subscriptions(&self) -> usize {
        self.channels * self.subscribers
    }

    /// Subscriber and publisher connections together.
    pub fn total_connections(&self) -> usize {
        self.connections + self.publishers.unwrap_or(self.channels).min(self.channels)
    }

    /// The channels connection `conn` subscribes to, in ascending order.
    ///
    /// Subscription `k` (of channel `k / subscribers`) goes to connection
    /// `k % connections`: a channel's subscribers are consecutive
    /// connections, hence distinct, and every connection gets its share.
    pub fn channels_of(&self, conn: usize) -> Vec<usize> {
        if self.subscribers == 0 {
            return Vec::new();
        }
        (conn..self.subscriptions())
            .step_by(self.connections)
            .map(|k| k / self.subscribers)
            .collect()
    }

    pub fn channel_name(&self, channel: usize) -> String {
        format!("{}{channel}", self.channel_prefix)
    }

    /// The channel a name stands for, if it is one of ours.
    pub fn channel_index(&self, name: &str) -> Option<usize> {
        name.strip_prefix(&self.channel_prefix)?.parse().ok()
    }

    /// The channels publisher `p` of `publishers` sends to.
    pub fn channels_of_publisher(&self, p: usize, publishers: usize) -> Vec<usize> {
        (p..self.channels).step_by(publishers).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(connections: usize, channels: usize, subscribers: usize) -> Plan {
        Plan {
            url: "ws://127.0.0.1:8000/ws".into(),
            connections,
            sources: None,
            channels,
            subscribers,
            rate: 100.0,
            payload: 100,
            publishers: None,
            duration: Duration::from_secs(1),
            settle: Duration::ZERO,
            drain: Duration::from_secs(1),
            connect_concurrency: 10,
            channel_prefix: "bench:".into(),
            secret: None,
            batch: false,
            server_pids: Vec::new(),
        }
    }

    #[test]
    fn every_channel_gets_its_subscribers_on_distinct_connections() {
        let p = plan(7, 5, 3);
        let mut per_channel = vec![Vec::new(); 5];
        for conn in 0..7 {
            for ch in p.channels_of(conn) {
                per_channel[ch].push(conn);
            }
        }
        for subs in &per_channel {
            assert_eq!(subs.len(), 3);
            let mut d = subs.clone();
            d.dedup();
            assert_eq!(d.len(), 3, "{subs:?}");
        }
        let loads: Vec<usize> = (0..7).map(|c| p.channels_of(c).len()).collect();
        assert!(loads.iter().all(|&l| l == 2 || l == 3), "{loads:?}");
    }

    #[test]
    fn layout_checks_and_spreads_sources() {
        let l = plan(50_000, 0, 0).layout().unwrap();
        assert_eq!(l.server, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(l.sources.len(), 3);
        assert_eq!(l.publishers, 0);
        assert_eq!(plan(10, 4, 2).layout().unwrap().publishers, 4);
        assert!(
            plan(2, 4, 3).layout().is_err(),
            "3 subscribers on 2 connections"
        );
        assert!(
            plan(1, 200, 1).layout().is_err(),
            "200 channels on one connection"
        );
        let mut p = plan(10, 1, 1);
        p.url = "ws://localhost:8000/ws".into();
        assert!(p.layout().is_err());
    }

    #[test]
    fn publishers_split_the_channels() {
        let p = plan(10, 5, 1);
        assert_eq!(p.channels_of_publisher(0, 2), [0, 2, 4]);
        assert_eq!(p.channels_of_publisher(1, 2), [1, 3]);
        assert_eq!(p.channel_index(&p.channel_name(42)), Some(42));
        assert_eq!(p.channel_index("other:1"), None);
    }
}
