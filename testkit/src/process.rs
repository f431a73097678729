//! Real `switchboard` processes.

use std::{
    net::SocketAddr,
    path::Path,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

use crate::WAIT;

/// A running `switchboard` process. Killed when dropped.
pub struct Process {
    child: Child,
    /// The address from its "listening" log line.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// The tasks that read its stdout and stderr into `log`, done at EOF.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Starts `bin` with `args` and waits for the log line that carries
    /// `ws://ADDR/ws`; pass `--listen 127.0.0.1:0` to let it pick a port.
    pub async fn start(bin: &Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_announcing(bin, args, "ws://").await
    }

    /// Like [`Process::start_announcing`], with extra environment variables
    /// (an empty value unsets the variable).
    pub async fn start_with_env(
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        scheme: &'static str,
    ) -> anyhow::Result<Self> {
        Self::spawn(bin, args, env, scheme).await
    }

    /// Like [`Process::start`], for a process that announces its address
    /// as `SCHEME://ADDR` (a broker announces `grpc://`).
    pub async fn start_announcing(
        bin: &Path,
        args: &[&str],
        scheme: &'static str,
    ) -> anyhow::Result<Self> {
        Self::spawn(bin, args, &[], scheme).await
    }

    async fn spawn(
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        scheme: &'static str,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(bin);
        command
            .args(args)
            .env("SWITCHBOARD_LOG", log_filter())
            // Nodes and gateways refuse to gossip without a key: every
            // process a test starts shares this test run's, unless `env`
            // gives another (or unsets it).
            .env("SWITCHBOARD_GOSSIP_KEY", crate::gossip_key::gossip_key());
        for (name, value) in env {
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel::<SocketAddr>();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let addr = listening_addr(&line, scheme);
                    // Logged before the start is signalled, so that the
                    // caller can read every address on the line at once.
                    log.lock().unwrap().push(line);
                    if let Some(addr) = addr
                        && let Some(tx) = tx.lock().unwrap().take()
                    {
                        let _ = tx.send(addr);
                    }
                }
            }));
        }
        // Generous: a loaded CI machine starts processes slowly.
        let addr = match tokio::time::timeout(WAIT * 3, rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.start_kill();
                bail!(
                    "{} did not report a listening address; log:\n{}",
                    bin.display(),
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Ok(Self {
            child,
            addr,
            log,
            readers,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Another address the process announced as `SCHEME://ADDR` in its log
    /// (a broker also announces `gossip://`).
    pub fn announced(&self, scheme: &str) -> Option<SocketAddr> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| listening_addr(l, scheme))
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (up to `within`) for the process to exit on its own, and for
    /// its last lines to reach the log.
    pub async fn exited(&mut self, within: std::time::Duration) -> anyhow::Result<ExitStatus> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .context("still running")??;
        for reader in self.readers.drain(..) {
            tokio::time::timeout(within, reader)
                .await
                .context("output still open after the exit")??;
        }
        Ok(status)
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;
        }
        Ok(tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("no exit after SIGTERM")??)
    }

    /// SIGSTOP: the process hangs with its sockets open, as a node cut off
    /// by the network looks to its peers.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT after [`Process::freeze`].
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.child.id().context("the process has exited")?;
        kill(Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// SIGKILL.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

fn listening_addr(line: &str, scheme: &str) -> Option<SocketAddr> {
    let start = line.find(scheme)? + scheme.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c == '/' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A loopback port that was free a moment ago, for a process that must
/// come back on the same address after a restart.
/// The processes' log filter: `info`, or `SWITCHBOARD_TEST_LOG` to look
/// closer when a test needs diagnosing.
fn log_filter() -> String {
    std::env::var("SWITCHBOARD_TEST_LOG").unwrap_or_else(|_| "info".into())
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_address() {
        let line = "2026-01-01T00:00:00Z INFO switchboard: switchboard dev: ws://127.0.0.1:4567/ws (metrics at …)";
        assert_eq!(
            super::listening_addr(line, "ws://"),
            Some("127.0.0.1:4567".parse().unwrap())
        );
        let line = "INFO switchboard node b1: grpc://127.0.0.1:7001 http://127.0.0.1:9001";
        assert_eq!(
            super::listening_addr(line, "grpc://"),
            Some("127.0.0.1:7001".parse().unwrap())
        );
    }
}
