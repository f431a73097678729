//! Cluster credentials: the flags, environment and `[cluster_security]`
//! table that secure traffic between nodes (mutual TLS with the cluster
//! CA's certificates on every gRPC connection, gossip sealed with the
//! cluster's keyring), and the refusal to start a node or gateway without
//! them (exit code 2, naming every missing flag), unless `--insecure` says
//! the cluster trusts its network. Flags win over the environment, which
//! wins over the config file.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use switchboard_cluster::{
    keyring::{KeyFile, KeyringError, Sealer, SharedKeyring, watch_file},
    membership::{IdentityConflict, Role},
    tls::{PeerIdentity, TlsContext, TlsFiles, identity::validate_name},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Cluster credentials, shared by `node` and `gateway`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct SecurityArgs {
    /// The cluster CA's certificate (PEM): peers must present a
    /// certificate it signed.
    #[arg(long, env = "SWITCHBOARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), issued by `switchboard ca issue`
    /// for its --name. Re-read when it changes.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The gossip key file: one base64 key (32 bytes) per line; the first
    /// seals, every one opens. Re-read when it changes.
    #[arg(long, env = "SWITCHBOARD_GOSSIP_KEY")]
    pub gossip_key: Option<PathBuf>,
    /// Run without cluster credentials, for a cluster that trusts its
    /// network: anyone who reaches the cluster's ports can act as any
    /// node. Logged as a warning at start.
    #[arg(
        long,
        env = "SWITCHBOARD_INSECURE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure: Option<bool>,
}

/// The config file's `[cluster_security]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterSecurity {
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub gossip_key: Option<PathBuf>,
    pub insecure: Option<bool>,
}

/// Why a node or gateway refuses to run: exit code 2, with this as the
/// one line on stderr.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "cluster credentials missing: {} (or --insecure for a cluster that trusts its network)",
        .0.join(", ")
    )]
    Missing(Vec<&'static str>),
    #[error("{0}")]
    Conflict(#[from] IdentityConflict),
    #[error("gossip key file {}: {error}", path.display())]
    GossipKey { path: PathBuf, error: KeyringError },
    /// Certificates that cannot be used: unreadable, for another name or
    /// role, a name that is no DNS label.
    #[error("{0}")]
    Tls(String),
}

/// What a node's gRPC connections run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsSecurity {
    MutualTls(TlsFiles),
    Insecure,
}

/// What this process gossips with.
#[derive(Debug)]
pub(crate) enum GossipSecurity {
    /// Sealed with the keyring loaded from the file (and reloaded).
    Keyed {
        file: KeyFile,
        keyring: SharedKeyring,
    },
    /// In the clear (`--insecure`).
    Plain,
}

/// Everything a process runs its cluster traffic with.
#[derive(Debug)]
pub(crate) struct Credentials {
    pub tls: TlsSecurity,
    /// `None` for a process that does not gossip (a static gateway).
    pub gossip: Option<GossipSecurity>,
}

impl SecurityArgs {
    /// Applies the config file's values where no flag or environment
    /// variable gave one.
    pub(crate) fn with_file(mut self, file: &ClusterSecurity) -> Self {
        self.tls_ca = self.tls_ca.or_else(|| file.tls_ca.clone());
        self.tls_cert = self.tls_cert.or_else(|| file.tls_cert.clone());
        self.tls_key = self.tls_key.or_else(|| file.tls_key.clone());
        self.gossip_key = self.gossip_key.or_else(|| file.gossip_key.clone());
        self.insecure = self.insecure.or(file.insecure);
        self
    }

    /// The credentials of a process (one that `gossips`, or not): the
    /// files given, or plain with `--insecure`, or a refusal naming every
    /// missing flag. The gossip key is read now: a broken one refuses too.
    pub(crate) fn resolve(self, gossips: bool) -> Result<Credentials, Refusal> {
        let insecure = self.insecure.unwrap_or(false);
        let tls = match (self.tls_ca, self.tls_cert, self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(TlsSecurity::MutualTls(TlsFiles { ca, cert, key }))
            }
            _ if insecure => Some(TlsSecurity::Insecure),
            (ca, cert, key) => {
                let mut missing = Vec::new();
                for (given, flag) in [
                    (ca.is_some(), "--tls-ca"),
                    (cert.is_some(), "--tls-cert"),
                    (key.is_some(), "--tls-key"),
                ] {
                    if !given {
                        missing.push(flag);
                    }
                }
                if gossips && self.gossip_key.is_none() {
                    missing.push("--gossip-key");
                }
                return Err(Refusal::Missing(missing));
            }
        };
        let gossip = match (gossips, self.gossip_key.as_deref()) {
            (false, _) => None,
            (true, Some(path)) => Some(load(path).map_err(|error| Refusal::GossipKey {
                path: path.to_owned(),
                error,
            })?),
            (true, None) if insecure => Some(GossipSecurity::Plain),
            (true, None) => return Err(Refusal::Missing(vec!["--gossip-key"])),
        };
        let credentials = Credentials {
            tls: tls.expect("set above"),
            gossip,
        };
        credentials.warn_if_insecure();
        Ok(credentials)
    }
}

impl Credentials {
    fn warn_if_insecure(&self) {
        if self.tls == TlsSecurity::Insecure {
            tracing::warn!(
                "--insecure: gRPC between nodes is neither authenticated nor encrypted; anyone \
                 who reaches this node's ports can act as any node"
            );
        }
        if matches!(self.gossip, Some(GossipSecurity::Plain)) {
            tracing::warn!(
                "--insecure: gossip is not authenticated; anyone who can reach the gossip port \
                 can join the cluster"
            );
        }
    }
}

impl TlsSecurity {
    /// Loads the TLS credentials for `name` in `role` (its certificate
    /// must name it); `None` when insecure.
    pub(crate) fn load(&self, name: &str, role: Role) -> Result<Option<Arc<TlsContext>>, Refusal> {
        validate_name(name).map_err(|e| Refusal::Tls(format!("--name: {e}")))?;
        let TlsSecurity::MutualTls(files) = self else {
            return Ok(None);
        };
        let me = PeerIdentity {
            name: name.to_owned(),
            role,
        };
        TlsContext::load(files.clone(), me)
            .map(Some)
            .map_err(|e| Refusal::Tls(format!("TLS credentials: {e}")))
    }
}

impl GossipSecurity {
    /// A sealer for the gossip agent, and the task that reloads the key
    /// file into it, tracked by `tracker`, until `shutdown`.
    pub(crate) fn start(
        self,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Option<Sealer> {
        match self {
            Self::Keyed { file, keyring } => {
                tracker.spawn(watch_file(file, keyring.clone(), shutdown));
                Some(Sealer::new(keyring))
            }
            Self::Plain => None,
        }
    }
}

fn load(path: &Path) -> Result<GossipSecurity, KeyringError> {
    let (file, keyring) = KeyFile::open(path)?;
    tracing::info!(path = %path.display(), keys = keyring.len(), "gossip is sealed");
    Ok(GossipSecurity::Keyed {
        file,
        keyring: SharedKeyring::new(keyring),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ca: Option<&str>, gossip_key: Option<&str>, insecure: Option<bool>) -> SecurityArgs {
        SecurityArgs {
            tls_ca: ca.map(PathBuf::from),
            gossip_key: gossip_key.map(PathBuf::from),
            insecure,
            ..SecurityArgs::default()
        }
    }

    #[test]
    fn every_missing_credential_is_named() {
        let e = args(None, None, None).resolve(true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cluster credentials missing: --tls-ca, --tls-cert, --tls-key, --gossip-key \
             (or --insecure for a cluster that trusts its network)"
        );
        let e = args(Some("ca.crt"), None, None).resolve(false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cluster credentials missing: --tls-cert, --tls-key \
             (or --insecure for a cluster that trusts its network)"
        );
        assert!(args(None, None, Some(false)).resolve(true).is_err());
        let plain = args(None, None, Some(true)).resolve(true).unwrap();
        assert_eq!(plain.tls, TlsSecurity::Insecure);
        assert!(matches!(plain.gossip, Some(GossipSecurity::Plain)));
        assert!(
            args(None, None, Some(true))
                .resolve(false)
                .unwrap()
                .gossip
                .is_none()
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = ClusterSecurity {
            tls_ca: Some("file-ca".into()),
            tls_cert: Some("file-cert".into()),
            tls_key: Some("file-key".into()),
            gossip_key: Some("/nonexistent/file.key".into()),
            insecure: Some(true),
        };
        let a = args(Some("flag-ca"), None, Some(false)).with_file(&file);
        assert_eq!(a.insecure, Some(false));
        assert_eq!(a.tls_ca, Some(PathBuf::from("flag-ca")));
        assert_eq!(a.tls_cert, Some(PathBuf::from("file-cert")));
        // The file's gossip key is used, and it does not exist: refused, naming it.
        let err = a.resolve(true).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/file.key"), "{err}");
        let b = args(None, Some("/flag.key"), None).with_file(&file);
        assert_eq!(b.gossip_key, Some(PathBuf::from("/flag.key")));
        assert_eq!(b.insecure, Some(true));
        // TLS without gossip (a static gateway) needs no gossip key.
        let c = args(Some("ca"), None, None).with_file(&ClusterSecurity {
            tls_cert: Some("cert".into()),
            tls_key: Some("key".into()),
            ..ClusterSecurity::default()
        });
        let tls = c.resolve(false).unwrap();
        assert!(matches!(tls.tls, TlsSecurity::MutualTls(_)));
    }
}
