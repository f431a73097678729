//! Docker Compose projects for tests: a compose file brought up under a
//! project name of its own, and brought down with its volumes when the
//! [`Compose`] is dropped, whether the test passed or panicked. Every
//! command is bounded.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// `docker` with `args`, within `timeout`; its stdout.
pub async fn docker(args: &[&str], timeout: Duration) -> anyhow::Result<String> {
    run(&["docker"], args, &[], None, timeout).await
}

async fn run(
    program: &[&str],
    args: &[&str],
    env: &[(String, String)],
    dir: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(program[0]);
    cmd.args(&program[1..])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let line = format!("{} {}", program.join(" "), args.join(" "));
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("`{line}` did not finish within {timeout:?}"))?
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Compose command this machine has: the `docker compose` plugin, or
/// the standalone `docker-compose`. Fails, saying what is missing, when
/// Docker or Compose cannot be used: tests that need them must not pass
/// without them.
pub async fn tool() -> anyhow::Result<Vec<String>> {
    let bound = Duration::from_secs(30);
    docker(&["info", "--format", "{{.ServerVersion}}"], bound)
        .await
        .context("Docker is not usable (is the daemon running, may this user use it?)")?;
    if run(&["docker", "compose"], &["version"], &[], None, bound)
        .await
        .is_ok()
    {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    run(&["docker-compose"], &["version"], &[], None, bound)
        .await
        .context("neither `docker compose` nor `docker-compose` works")?;
    Ok(vec!["docker-compose".into()])
}

/// One Compose project.
pub struct Compose {
    tool: Vec<String>,
    /// The project's directory (where the first compose file is).
    dir: PathBuf,
    project: String,
    /// Global flags after the tool: project name, files, env file.
    flags: Vec<String>,
    env: Vec<(String, String)>,
    down: bool,
}

impl Compose {
    /// A project named `project` from `files` (the first one's directory
    /// is the project directory), with `--env-file` if given, and `env`
    /// set for every command (it wins over the env file, as a shell's
    /// environment does).
    pub fn new(
        tool: Vec<String>,
        project: &str,
        files: &[PathBuf],
        env_file: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Self {
        let dir = files[0]
            .parent()
            .expect("a compose file has a directory")
            .to_owned();
        let mut flags = vec!["-p".to_owned(), project.to_owned()];
        for f in files {
            flags.extend(["-f".to_owned(), f.display().to_string()]);
        }
        if let Some(env_file) = env_file {
            flags.extend(["--env-file".to_owned(), env_file.display().to_string()]);
        }
        Self {
            tool,
            dir,
            project: project.to_owned(),
            flags,
            env,
            down: false,
        }
    }

    /// The command line that stands for `docker compose` in this project,
    /// for running documented commands through it.
    pub fn command_line(&self) -> String {
        self.tool
            .iter()
            .chain(&self.flags)
            .map(|a| {
                if a.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("'{}'", a.replace('\'', "'\\''"))
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The environment every command gets.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The project's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The project's default network.
    pub fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// Runs a Compose subcommand; its stdout.
    pub async fn run(&self, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let program: Vec<&str> = self
            .tool
            .iter()
            .chain(&self.flags)
            .map(String::as_str)
            .collect();
        run(&program, args, &self.env, Some(&self.dir), timeout).await
    }

    /// `up -d` with the images already there: building or pulling here
    /// would reach for a registry.
    pub async fn up(&self) -> anyhow::Result<()> {
        self.run(&["up", "-d", "--no-build"], Duration::from_secs(300))
            .await
            .map(drop)
    }

    /// The host address published for a service's container port.
    pub async fn port(&self, service: &str, port: u16) -> anyhow::Result<SocketAddr> {
        let out = self
            .run(
                &["port", service, &port.to_string()],
                Duration::from_secs(30),
            )
            .await?;
        out.trim()
            .parse()
            .with_context(|| format!("`port {service} {port}` printed {out:?}"))
    }

    /// The container id of a service.
    pub async fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self
            .run(&["ps", "-q", service], Duration::from_secs(30))
            .await?
            .trim()
            .to_owned();
        anyhow::ensure!(!id.is_empty(), "service {service} has no container");
        Ok(id)
    }

    /// The container's address on the project's network.
    pub async fn ip(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container(service).await?;
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network()
        );
        Ok(
            docker(&["inspect", "-f", &format, &id], Duration::from_secs(30))
                .await?
                .trim()
                .to_owned(),
        )
    }

    /// The last lines of every service's log.
    pub async fn logs(&self, tail: usize) -> String {
        match self
            .run(
                &["logs", "--no-color", "--tail", &tail.to_string()],
                Duration::from_secs(60),
            )
            .await
        {
            Ok(logs) => logs,
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// `down -v`: containers, networks and volumes go.
    pub async fn down(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.run(
            &["down", "-v", "--remove-orphans", "-t", "2"],
            Duration::from_secs(180),
        )
        .await?;
        self.down = true;
        Ok(started.elapsed())
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        // No runtime to lean on here: plain processes, each bounded.
        let program: Vec<&String> = self.tool.iter().chain(&self.flags).collect();
        let command = |args: &[&str]| {
            let mut cmd = std::process::Command::new(program[0]);
            cmd.args(&program[1..])
                .args(args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&self.dir)
                .stdin(Stdio::null());
            cmd
        };
        if std::thread::panicking() {
            let mut logs = command(&["logs", "--no-color", "--tail", "60"]);
            logs.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            eprintln!("--- compose logs of {} ---", self.project);
            wait_bounded(logs, Duration::from_secs(60));
        }
        let mut down = command(&["down", "-v", "--remove-orphans", "-t", "2"]);
        down.stdout(Stdio::null()).stderr(Stdio::inherit());
        if !wait_bounded(down, Duration::from_secs(180)) {
            eprintln!(
                "compose project {} may be left behind: `down` failed",
                self.project
            );
        }
    }
}

/// Runs `cmd` to completion or kills it at `timeout`; true on success.
pub fn wait_bounded(mut cmd: std::process::Command, timeout: Duration) -> bool {
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}
