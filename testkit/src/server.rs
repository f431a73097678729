//! The dev process ([`switchboard_gateway::dev::run`]) in this process, on
//! loopback ports, reached by real WebSocket and HTTP clients. Restartable
//! on the same address; each start is a fresh broker, so a restart loses
//! every channel's state, as a process restart does.

use std::{net::SocketAddr, time::Duration};

use switchboard_gateway::{GatewayError, Listeners, Settings};
use switchboard_node::BrokerConfig;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{WAIT, client::Client, settings::ForTest};

/// A gateway and broker in this process.
pub struct TestServer {
    /// Clients: `/ws`, health, metrics, and the server API unless it has a
    /// listener of its own.
    pub addr: SocketAddr,
    /// Where the server API is served: `addr` unless started with its own listener.
    pub api_addr: SocketAddr,
    /// Cancel to drain and stop.
    pub shutdown: CancellationToken,
    /// The dev process' result, once it has drained.
    pub handle: JoinHandle<Result<(), GatewayError>>,
    settings: Settings,
    broker: BrokerConfig,
}

impl TestServer {
    /// [`Settings::for_test`](ForTest::for_test) and the default broker.
    pub async fn dev() -> Self {
        Self::start(Settings::for_test()).await
    }

    pub async fn start(settings: Settings) -> Self {
        Self::start_with(settings, BrokerConfig::default(), false).await
    }

    /// With the server API on a listener of its own when `separate_api`.
    pub async fn start_with(settings: Settings, broker: BrokerConfig, separate_api: bool) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self::start_on(any, separate_api.then_some(any), settings, broker).await
    }

    async fn start_on(
        addr: SocketAddr,
        api_addr: Option<SocketAddr>,
        settings: Settings,
        broker: BrokerConfig,
    ) -> Self {
        let client = bind(addr).await;
        let addr = client.local_addr().expect("bound address");
        let api = match api_addr {
            Some(api_addr) => Some(bind(api_addr).await),
            None => None,
        };
        let api_addr = api
            .as_ref()
            .map_or(addr, |l| l.local_addr().expect("bound address"));
        let shutdown = CancellationToken::new();
        let listeners = Listeners { client, api };
        let handle = tokio::spawn(switchboard_gateway::dev::run(
            listeners,
            settings.clone(),
            broker.clone(),
            shutdown.clone(),
        ));
        Self {
            addr,
            api_addr,
            shutdown,
            handle,
            settings,
            broker,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await.expect("connect")
    }

    /// A client authenticated as `user` through the query parameter, with
    /// a token of [`crate::settings::token`].
    pub async fn user(&self, user: &str) -> Client {
        let token = crate::settings::token(user, Duration::from_secs(3600));
        let mut c = Client::connect(&format!("{}?token={token}", self.url()))
            .await
            .expect("connect");
        let auth = c.next().await.expect("authenticated frame");
        assert_eq!(auth["type"], "authenticated", "{auth}");
        c
    }

    /// Drains (clients get `disconnect` 1001) and waits for the end.
    pub async fn stop(self) {
        self.drain().await;
    }

    /// Stops and starts a fresh server on the same addresses.
    pub async fn restart(self) -> Self {
        let separate_api = (self.api_addr != self.addr).then_some(self.api_addr);
        let (addr, settings, broker) = self.drain().await;
        Self::start_on(addr, separate_api, settings, broker).await
    }

    async fn drain(self) -> (SocketAddr, Settings, BrokerConfig) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("server stops in time")
            .expect("the server task ends")
            .expect("the server drains cleanly");
        (self.addr, self.settings, self.broker)
    }
}

/// Binds `addr`, waiting out (within [`WAIT`]) a listener of a stopped
/// server that lingers for a moment.
async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}
