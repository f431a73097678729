//! A minimal HTTP/1.1 GET over a real socket, for probing `/metrics`,
//! `/healthz`, `/readyz` (and Chromium's DevTools endpoint) without pulling
//! an HTTP client into tests.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::WAIT;

/// Status code and body of `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        // Read the head, then exactly Content-Length bytes when given: not
        // every server closes the connection when asked.
        let (head_end, length) = loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                anyhow::bail!("connection closed before the response head");
            }
            raw.extend_from_slice(&buf[..n]);
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                break (i + 4, length);
            }
        };
        match length {
            Some(len) => {
                while raw.len() < head_end + len {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
            }
            None => {
                stream.read_to_end(&mut raw).await?;
            }
        }
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(WAIT, fetch)
        .await
        .context("HTTP GET timed out")??;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
