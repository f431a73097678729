//! An in-process gateway and broker on a free loopback port, reached by
//! real WebSocket clients.

#![allow(dead_code, unused_imports)]

use std::{net::SocketAddr, time::Duration};

use switchboard_gateway::{ApiConfig, GatewayConfig, Listeners, Settings, auth::TokenIssuer};
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

/// Two API keys, as during a rotation: both must work.
pub const API_KEY: &str = "test-api-key-new";
pub const OLD_API_KEY: &str = "test-api-key-old";

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
        api: ApiConfig {
            keys: vec![API_KEY.into(), OLD_API_KEY.into()],
            ..Default::default()
        },
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
    /// Where the server API is served: `addr` unless started with its own listener.
    pub api_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), switchboard_gateway::GatewayError>>,
}

impl Server {
    pub async fn start(settings: Settings) -> Self {
        Self::start_with(settings, BrokerConfig::default(), false).await
    }

    /// With the server API on a listener of its own when `separate_api`.
    pub async fn start_with(settings: Settings, broker: BrokerConfig, separate_api: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let api = match separate_api {
            true => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")),
            false => None,
        };
        let api_addr = api.as_ref().map_or(addr, |l| l.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let broker = LocalBroker::new(broker, settings.namespaces.clone());
        let listeners = Listeners {
            client: listener,
            api,
        };
        let handle = tokio::spawn(switchboard_gateway::run_with(
            listeners,
            settings,
            broker,
            shutdown.clone(),
        ));
        Self {
            addr,
            api_addr,
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
