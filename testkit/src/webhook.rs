//! A webhook endpoint for tests: a real HTTP/1.1 listener on loopback that
//! records every request's Pusher headers and body and answers 200.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub signature: String,
    pub body: String,
}

/// The endpoint; it stops when dropped.
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(r)) =
                        tokio::time::timeout(Duration::from_secs(10), read(stream)).await
                    {
                        log.lock().expect("not poisoned").push(r);
                    }
                });
            }
        });
        Ok(Self {
            url,
            received,
            task,
        })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }

    /// Every event of every request so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Polls until `done` holds for the events received, or `within` passes.
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let events = self.events();
            if done(&events) {
                return Ok(events);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "webhooks received so far: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn read(mut stream: TcpStream) -> anyhow::Result<Received> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the headers ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let length: usize = header("content-length")
        .context("no content-length")?
        .parse()?;
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the body ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await?;
    Ok(Received {
        key: header("x-pusher-key").unwrap_or_default(),
        signature: header("x-pusher-signature").unwrap_or_default(),
        body: String::from_utf8(buf[head_end..head_end + length].to_vec())?,
    })
}
