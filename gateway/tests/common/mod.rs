//! An in-process gateway and broker on a free loopback port, reached by
//! real WebSocket clients.

#![allow(dead_code, unused_imports)]

use std::{net::SocketAddr, time::Duration};

use switchboard_gateway::{GatewayConfig, Settings, auth::TokenIssuer};
use switchboard_node::{BrokerConfig, LocalBroker, Namespaces};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use switchboard_cluster_tests::{
    WAIT,
    client::{Client, Closed},
    http,
};

/// The offsets of a reply's `publications`.
pub fn offsets(reply: &serde_json::Value) -> Vec<u64> {
    field(reply, "offset")
        .iter()
        .map(|o| o.as_u64().expect("offset is a number"))
        .collect()
}

/// One field of each of a reply's `publications`.
pub fn field(reply: &serde_json::Value, name: &str) -> Vec<serde_json::Value> {
    reply["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p[name].clone())
        .collect()
}

pub const SECRET: &str = "test-secret";

/// Like the dev default, with timers short enough for tests.
pub fn settings() -> Settings {
    let mut gateway = GatewayConfig {
        name: "test-gw".into(),
        ..Default::default()
    };
    gateway.auth.allow_anonymous = true;
    gateway.auth.hmac_secret = Some(SECRET.into());
    gateway.auth.leeway = Duration::ZERO;
    gateway.drain_timeout = Duration::from_secs(5);
    gateway.limits.rate_per_second = 1000.0;
    gateway.limits.rate_burst = 1000;
    Settings {
        gateway,
        namespaces: Namespaces::permissive(),
    }
}

pub fn issuer() -> TokenIssuer {
    TokenIssuer::hmac(SECRET)
}

pub fn token(user: &str) -> String {
    issuer().issue(user, Duration::from_secs(3600), None)
}

pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), switchboard_gateway::GatewayError>>,
}

impl Server {
    pub async fn start(settings: Settings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let broker = LocalBroker::new(BrokerConfig::default(), settings.namespaces.clone());
        let handle = tokio::spawn(switchboard_gateway::run(
            listener,
            settings,
            broker,
            shutdown.clone(),
        ));
        Self {
            addr,
            shutdown,
            handle,
        }
    }

    pub async fn dev() -> Self {
        Self::start(settings()).await
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await.expect("connect")
    }

    /// A client authenticated as `user` through the query parameter.
    pub async fn user(&self, user: &str) -> Client {
        let mut c = Client::connect(&format!("{}?token={}", self.url(), token(user)))
            .await
            .expect("connect");
        let auth = c.next().await.expect("authenticated frame");
        assert_eq!(auth["type"], "authenticated", "{auth}");
        c
    }
}
