//! A network partition of one process: a network namespace joined to the
//! host by a veth pair (`10.77.X.1` on the host, `10.77.X.2` inside), in
//! which the process runs (`ip netns exec`). [`Partition::cut`] drops
//! every packet arriving on either end of the link (iptables `INPUT`
//! rules on the host side and inside the namespace), so that both sides
//! see silence, as across a failed switch, not refused connections;
//! [`Partition::heal`] removes the rules. Needs root (`ip netns` and
//! iptables), as CI and the scenario hosts have.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::Command,
};

use anyhow::{Context, ensure};

/// A network namespace with a link to the host; removed on drop.
pub struct Partition {
    name: String,
    host_dev: String,
    ns_dev: String,
    subnet: u8,
    cut: bool,
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Partition {
    /// Creates the namespace and its link, named after this process so
    /// that test runs side by side do not meet.
    pub fn create() -> anyhow::Result<Self> {
        // One per scenario, and scenarios run side by side in one process.
        static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let p = Self {
            name: format!("sbpart{pid}x{n}"),
            host_dev: format!("sbp{pid}h{n}"),
            ns_dev: format!("sbp{pid}n{n}"),
            subnet: ((pid + n * 97) % 250) as u8 + 1,
            cut: false,
        };
        // Left over by a run that was killed.
        let _ = run(&["ip", "netns", "del", &p.name]);
        let _ = run(&["ip", "link", "del", &p.host_dev]);
        let (host_cidr, ns_cidr) = (format!("{}/24", p.host_ip()), format!("{}/24", p.ns_ip()));
        run(&["ip", "netns", "add", &p.name])?;
        run(&[
            "ip",
            "link",
            "add",
            &p.host_dev,
            "type",
            "veth",
            "peer",
            "name",
            &p.ns_dev,
        ])?;
        run(&["ip", "link", "set", &p.ns_dev, "netns", &p.name])?;
        run(&["ip", "addr", "add", &host_cidr, "dev", &p.host_dev])?;
        run(&["ip", "link", "set", &p.host_dev, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &p.name];
            all.extend(args);
            run(&all)
        };
        inside(&["ip", "addr", "add", &ns_cidr, "dev", &p.ns_dev])?;
        inside(&["ip", "link", "set", &p.ns_dev, "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(p)
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the host's end of the link.
    pub fn host_dev(&self) -> &str {
        &self.host_dev
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend(args);
        run(&all)
    }

    /// The host's end of the link: what the processes outside bind.
    pub fn host_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, self.subnet, 1))
    }

    /// The namespace's end: what the process inside binds.
    pub fn ns_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, self.subnet, 2))
    }

    fn rules(&self, op: &str) -> anyhow::Result<()> {
        run(&["iptables", op, "INPUT", "-i", &self.host_dev, "-j", "DROP"])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "iptables",
            op,
            "INPUT",
            "-i",
            &self.ns_dev,
            "-j",
            "DROP",
        ])
    }

    /// Drops everything crossing the link, both ways.
    pub fn cut(&mut self) -> anyhow::Result<()> {
        ensure!(!self.cut, "already cut");
        self.rules("-I")?;
        self.cut = true;
        Ok(())
    }

    /// Lets traffic cross again.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        ensure!(self.cut, "not cut");
        self.rules("-D")?;
        self.cut = false;
        Ok(())
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if self.cut {
            let _ = self.heal();
        }
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = run(&["ip", "link", "del", &self.host_dev]);
    }
}
