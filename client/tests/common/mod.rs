//! In-process servers on loopback ports (restartable on the same address),
//! a TCP proxy that can go silent, and bounded waits.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use switchboard_gateway::{GatewayConfig, Settings, auth::TokenIssuer};
use switchboard_node::{BrokerConfig, LocalBroker, Namespaces};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

pub const SECRET: &str = "test-secret";

pub fn settings() -> Settings {
    let mut gateway = GatewayConfig {
        name: "client-test".into(),
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
        api: Default::default(),
    }
}

pub fn token(user: &str, ttl: Duration) -> String {
    TokenIssuer::hmac(SECRET).issue(user, ttl, None)
}

/// A gateway and broker in this process. Each start is a fresh broker:
/// restarting loses every channel's state, as a process restart does.
pub struct Server {
    pub addr: SocketAddr,
    settings: Settings,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), switchboard_gateway::GatewayError>>,
}

impl Server {
    pub async fn start(settings: Settings) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), settings).await
    }

    async fn start_on(addr: SocketAddr, settings: Settings) -> Self {
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                // The old listener may linger for a moment.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let broker = LocalBroker::new(BrokerConfig::default(), settings.namespaces.clone());
        let handle = tokio::spawn(switchboard_gateway::run(
            listener,
            settings.clone(),
            broker,
            shutdown.clone(),
        ));
        Self {
            addr,
            settings,
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

    /// Drains (clients get `disconnect` 1001) and waits for the end.
    pub async fn stop(self) -> (SocketAddr, Settings) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
        (self.addr, self.settings)
    }

    /// Stops and starts a fresh server on the same address.
    pub async fn restart(self) -> Self {
        let (addr, settings) = self.stop().await;
        Self::start_on(addr, settings).await
    }
}

/// A TCP proxy whose open connections can be frozen: bytes stop flowing
/// both ways while the sockets stay open, as with a dead NAT or a phone
/// that slept. New connections flow normally.
pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<std::sync::Mutex<Vec<Arc<AtomicBool>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen: Arc<std::sync::Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let links = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(target).await else {
                    continue;
                };
                let flag = Arc::new(AtomicBool::new(false));
                links.lock().unwrap().push(flag.clone());
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::spawn(pipe(cr, uw, flag.clone()));
                tokio::spawn(pipe(ur, cw, flag));
            }
        });
        Self { addr, frozen, task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Silences every connection open now.
    pub fn freeze(&self) {
        for flag in self.frozen.lock().unwrap().iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if frozen.load(Ordering::SeqCst) {
            // Swallow the bytes but keep both sockets open.
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if !frozen.load(Ordering::SeqCst) {
        let _ = to.shutdown().await;
    } else {
        // A frozen link never closes on its own: keep the write half alive.
        std::future::pending::<()>().await;
    }
}

/// Polls `check` until it holds or `WAIT` passes.
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
