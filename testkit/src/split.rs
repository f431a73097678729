//! A partial partition: two network namespaces (two [`Partition`]s, each
//! with its link to the host), routed to each other through the host.
//! Processes on either side reach the host, where a test's clients run,
//! and, until [`Split::cut`], each other. `cut` drops what the host
//! forwards between the two sides (iptables `FORWARD`), so that each side
//! sees the other fall silent while the clients still reach both: a broken
//! link between two racks, not a host gone. Needs root, as
//! [`Partition`] does.

use crate::partition::{Partition, run};

/// Two sides, `a` and `b`, joined through the host; un-joined on drop.
pub struct Split {
    pub a: Partition,
    pub b: Partition,
    cut: bool,
}

impl Split {
    /// Creates both namespaces and lets the host forward between them
    /// (each side's default route is its host end).
    pub fn create() -> anyhow::Result<Self> {
        let split = Self {
            a: Partition::create()?,
            b: Partition::create()?,
            cut: false,
        };
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
        if forwarding.trim() != "1" {
            run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        for side in [&split.a, &split.b] {
            let via = side.host_ip().to_string();
            side.exec(&["ip", "route", "add", "default", "via", &via])?;
        }
        // Docker's FORWARD policy is DROP: say this link may be forwarded.
        split.forward("-I", "ACCEPT")?;
        Ok(split)
    }

    fn forward(&self, op: &str, verdict: &str) -> anyhow::Result<()> {
        let (a, b) = (self.a.host_dev(), self.b.host_dev());
        for (from, to) in [(a, b), (b, a)] {
            run(&[
                "iptables", op, "FORWARD", "-i", from, "-o", to, "-j", verdict,
            ])?;
        }
        Ok(())
    }

    /// Drops everything between the two sides, both ways; both still reach
    /// the host.
    pub fn cut(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.cut, "already cut");
        // Inserted above the ACCEPT rules.
        self.forward("-I", "DROP")?;
        self.cut = true;
        Ok(())
    }

    /// Lets the two sides reach each other again.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.cut, "not cut");
        self.forward("-D", "DROP")?;
        self.cut = false;
        Ok(())
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        if self.cut {
            let _ = self.heal();
        }
        let _ = self.forward("-D", "ACCEPT");
    }
}
