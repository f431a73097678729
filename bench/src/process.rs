//! Processes the tool watches: the server (found by its listening port
//! unless given) and the tool itself. Resident memory comes from
//! `/proc/PID/status`, CPU time from `/proc/PID/stat`: Linux only, and
//! reported as absent elsewhere.

use std::{fs, net::SocketAddr};

use serde::Serialize;

/// `/proc` reports CPU time in clock ticks of `USER_HZ`, which Linux fixes
/// at 100 on every architecture it exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// A process by id; `pid` 0 stands for the tool itself.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
}

/// One reading of a process's memory and CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    /// User and system time together.
    pub cpu_seconds: f64,
    /// Time in the kernel (system calls, network stack) alone.
    pub system_seconds: f64,
}

impl Process {
    pub fn me() -> Self {
        Self { pid: 0 }
    }

    fn dir(&self) -> String {
        if self.pid == 0 {
            "/proc/self".into()
        } else {
            format!("/proc/{}", self.pid)
        }
    }

    /// Memory and CPU now, if `/proc` has them.
    pub fn usage(&self) -> Option<Usage> {
        let dir = self.dir();
        let status = fs::read_to_string(format!("{dir}/status")).ok()?;
        let stat = fs::read_to_string(format!("{dir}/stat")).ok()?;
        let (user, system) = cpu_seconds(&stat)?;
        Some(Usage {
            rss_bytes: rss_bytes(&status)?,
            cpu_seconds: user + system,
            system_seconds: system,
        })
    }

    /// The process listening on `addr`'s port (TCP, IPv4 or IPv6), found by
    /// the socket's inode in `/proc/net/tcp*` and then among every
    /// process's open files.
    pub fn listening_on(addr: SocketAddr) -> Option<Self> {
        let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|t| fs::read_to_string(t).ok())
            .flat_map(|table| listening_inodes(&table, addr.port()))
            .collect();
        if inodes.is_empty() {
            return None;
        }
        let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Ok(link) = fs::read_link(fd.path())
                    && targets.iter().any(|t| link.as_os_str() == t.as_str())
                {
                    return Some(Self { pid });
                }
            }
        }
        None
    }
}

/// Resident memory of a reading, 0 when there is none.
pub fn rss(u: Option<Usage>) -> u64 {
    u.map_or(0, |u| u.rss_bytes)
}

fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User and system seconds.
fn cpu_seconds(stat: &str) -> Option<(f64, f64)> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 12 and 13 after field 2.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((
        utime as f64 / TICKS_PER_SECOND,
        stime as f64 / TICKS_PER_SECOND,
    ))
}

/// Inodes of sockets in LISTEN state (0A) on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A")
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_usage() {
        let u = Process::me().usage().expect("Linux /proc");
        assert!(u.rss_bytes > 1024 * 1024);
        assert!(u.cpu_seconds >= 0.0);
    }

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "123 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(cpu_seconds(stat), Some((2.5, 0.5)));
    }

    #[test]
    fn finds_the_process_that_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let found = Process::listening_on(listener.local_addr().unwrap()).unwrap();
        assert_eq!(found.pid, std::process::id());
    }
}
