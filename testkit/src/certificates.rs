//! Cluster certificates for tests, made by the same code as `switchboard
//! ca` ([`switchboard_cluster::tls::authority`]) in a temporary directory.
//! [`ClusterCa::shared`] is the one CA of a test binary, whose nodes get
//! their certificates on first use; [`ClusterCa::new`] makes another (an
//! attacker's CA, a test of its own).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use anyhow::Context;
use switchboard_cluster::{membership::Role, tls::authority};

/// A node's three TLS files.
#[derive(Debug, Clone)]
pub struct NodeCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NodeCerts {
    /// `--tls-ca CA --tls-cert CERT --tls-key KEY`.
    pub fn args(&self) -> Vec<String> {
        let path = |p: &Path| p.to_str().expect("temp paths are UTF-8").to_owned();
        vec![
            "--tls-ca".into(),
            path(&self.ca),
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
        ]
    }
}

/// A CA in a directory of its own, removed when dropped.
pub struct ClusterCa {
    dir: PathBuf,
    issued: Mutex<BTreeMap<(String, bool), NodeCerts>>,
}

impl ClusterCa {
    /// A new CA in a new temporary directory.
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-ca-{}-{}",
            std::process::id(),
            crate::process::free_port()?
        ));
        authority::init_dir(&dir, false).with_context(|| format!("CA in {}", dir.display()))?;
        Ok(Self {
            dir,
            issued: Mutex::new(BTreeMap::new()),
        })
    }

    /// The CA every cluster in this test binary shares.
    pub fn shared() -> &'static ClusterCa {
        static SHARED: OnceLock<ClusterCa> = OnceLock::new();
        SHARED.get_or_init(|| ClusterCa::new().expect("test CA"))
    }

    /// The CA's directory (ca.crt, ca.key, gossip.key, NAME.crt, NAME.key).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate's path.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `name`'s certificate in `role`, issued on first use and kept.
    pub fn node(&self, name: &str, role: Role) -> NodeCerts {
        let mut issued = self.issued.lock().expect("not poisoned");
        issued
            .entry((name.to_owned(), role == Role::Broker))
            .or_insert_with(|| self.issue(name, role).expect("issuing a test certificate"))
            .clone()
    }

    /// Issues (or re-issues, to the same paths) `name`'s certificate: a
    /// rotation.
    pub fn issue(&self, name: &str, role: Role) -> anyhow::Result<NodeCerts> {
        let [cert, key] = authority::issue_into_dir(&self.dir, name, role, &[], 30)?;
        Ok(NodeCerts {
            ca: self.ca_cert(),
            cert,
            key,
        })
    }

    /// A broker's TLS flags.
    pub fn broker_args(&self, name: &str) -> Vec<String> {
        self.node(name, Role::Broker).args()
    }

    /// A gateway's TLS flags.
    pub fn gateway_args(&self, name: &str) -> Vec<String> {
        self.node(name, Role::Gateway).args()
    }
}

impl Drop for ClusterCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ClusterCa {
    /// A `switchboard node|gateway --name NAME ...` command line with
    /// NAME's TLS flags added (role from the subcommand).
    pub fn secured(&self, args: &[&str]) -> Vec<String> {
        let name = args
            .iter()
            .position(|a| *a == "--name")
            .and_then(|i| args.get(i + 1))
            .expect("a --name to issue the certificate for");
        let tls = match args.first() {
            Some(&"gateway") => self.gateway_args(name),
            _ => self.broker_args(name),
        };
        args.iter().map(|a| (*a).to_owned()).chain(tls).collect()
    }
}

/// Borrows a command line built by [`ClusterCa::secured`].
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
