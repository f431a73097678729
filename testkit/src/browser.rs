//! Headless Chromium driven over the DevTools protocol, for tests that must
//! see what a real browser does. Chromium comes from Debian's `chromium`
//! package, or from `SWITCHBOARD_CHROMIUM`.
//!
//! Polling the page through DevTools waits on what the page does; a DOM
//! dump with a virtual-time budget does not wait for WebSocket traffic.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::{WAIT, client::Ws};

/// One headless Chromium with one page. Killed when dropped.
pub struct Browser {
    child: Child,
    page: Ws,
    next_id: u64,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts Chromium on `url` and attaches to its page.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let bin = std::env::var("SWITCHBOARD_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = TempDir(std::env::temp_dir().join(format!(
            "switchboard-chromium-{}-{}",
            std::process::id(),
            rand_suffix()
        )));
        let mut child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("cannot run {bin:?}: install Chromium or set SWITCHBOARD_CHROMIUM")
            })?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let browser_ws = tokio::time::timeout(WAIT * 3, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(i) = line.find("ws://") {
                    return Ok(line[i..].trim().to_owned());
                }
            }
            Err(anyhow!("chromium exited before DevTools listened"))
        })
        .await
        .context("chromium did not start DevTools in time")??;
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .context("DevTools address")?
            .to_owned();
        let page_ws = page_target(&http).await?;
        let (page, _) = connect_async(page_ws.as_str()).await?;
        Ok(Self {
            child,
            page,
            next_id: 1,
            _profile: profile,
        })
    }

    /// Evaluates `expression` in the page and returns its value as JSON.
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true, "awaitPromise": true}});
        self.page.send(Message::text(call.to_string())).await?;
        loop {
            let msg = tokio::time::timeout(WAIT, self.page.next())
                .await
                .context("DevTools did not answer")?
                .context("DevTools connection ended")??;
            let Message::Text(text) = msg else { continue };
            let reply: Value = serde_json::from_str(&text)?;
            if reply["id"] == json!(id) {
                if let Some(ex) = reply["result"].get("exceptionDetails") {
                    bail!("page threw: {ex}");
                }
                return Ok(reply["result"]["result"]["value"].clone());
            }
        }
    }

    /// Polls `expression` until it yields a value for which `done` holds.
    pub async fn wait_for(
        &mut self,
        expression: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        loop {
            let value = self.eval(expression).await?;
            if done(&value) {
                return Ok(value);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("page never got there; last value: {value}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn close(mut self) {
        let _ = self.child.kill().await;
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The DevTools WebSocket of the first page target.
async fn page_target(http_addr: &str) -> anyhow::Result<String> {
    let addr: std::net::SocketAddr = http_addr.parse().context("DevTools address")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = crate::http::get(addr, "/json/list").await?;
        if status == 200 {
            let targets: Value = serde_json::from_str(&body)?;
            if let Some(ws) = targets
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                return Ok(ws.to_owned());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no page target in DevTools");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
