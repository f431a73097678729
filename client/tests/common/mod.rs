//! The test kit's in-process server (restartable on the same address), a
//! TCP proxy that can go silent, and bounded waits.

#![allow(dead_code, unused_imports)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

pub(crate) use switchboard_gateway::Settings;
pub(crate) use switchboard_testkit::{ForTest, TestServer, WAIT, settings::token};

/// A TCP proxy whose open connections can be frozen: bytes stop flowing
/// both ways while the sockets stay open, as with a dead NAT or a phone
/// that slept. New connections flow normally.
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<std::sync::Mutex<Vec<Arc<AtomicBool>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Self {
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

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Silences every connection open now.
    pub(crate) fn freeze(&self) {
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
pub(crate) async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
