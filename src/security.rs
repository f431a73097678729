//! Cluster credentials: the flags, environment and `[cluster_security]`
//! table that secure traffic between nodes, and the refusal to start a
//! node or gateway without them (exit code 2), unless `--insecure` says
//! the cluster trusts its network. This file holds the gossip half: the
//! gossip keyring.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchboard_cluster::{
    keyring::{KeyFile, KeyringError, Sealer, SharedKeyring, watch_file},
    membership::IdentityConflict,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Cluster credentials, shared by `node` and `gateway`. Flags win over
/// the environment, which wins over the config file's `[cluster_security]`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct SecurityArgs {
    /// The gossip key file: one base64 key (32 bytes) per line; the first
    /// seals, every one opens. Re-read when it changes.
    #[arg(long, env = "SWITCHBOARD_GOSSIP_KEY")]
    pub gossip_key: Option<PathBuf>,
    /// Run without cluster credentials, for a cluster that trusts its
    /// network: gossip in the clear. Logged as a warning at start.
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

impl SecurityArgs {
    /// The gossip security of a process that gossips: the key file (read
    /// now; a broken one refuses to start), or plain with `--insecure`, or
    /// a refusal naming what is missing.
    pub(crate) fn gossip(&self) -> Result<GossipSecurity, Refusal> {
        match self.gossip_key.as_deref() {
            Some(path) => load(path).map_err(|error| Refusal::GossipKey {
                path: path.to_owned(),
                error,
            }),
            None if self.insecure() => Ok(GossipSecurity::Plain),
            None => Err(Refusal::Missing(vec!["--gossip-key"])),
        }
    }

    /// Whether `--insecure` (or its environment or file setting) is on.
    fn insecure(&self) -> bool {
        self.insecure.unwrap_or(false)
    }

    /// Applies the config file's values where no flag or environment
    /// variable gave one, and warns if the result is insecure.
    pub(crate) fn with_file(mut self, file: &ClusterSecurity) -> Self {
        self.gossip_key = self.gossip_key.or_else(|| file.gossip_key.clone());
        self.insecure = self.insecure.or(file.insecure);
        if self.insecure() {
            tracing::warn!(
                "--insecure: traffic between nodes is not authenticated; anyone who can reach \
                 the gossip port can join the cluster"
            );
        }
        self
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

    fn args(gossip_key: Option<&str>, insecure: Option<bool>) -> SecurityArgs {
        SecurityArgs {
            gossip_key: gossip_key.map(PathBuf::from),
            insecure,
        }
    }

    #[test]
    fn refuses_without_a_key_or_insecure_naming_the_flag() {
        let err = args(None, None).gossip().unwrap_err();
        assert_eq!(
            err.to_string(),
            "cluster credentials missing: --gossip-key (or --insecure for a cluster that trusts its network)"
        );
        assert!(args(None, Some(false)).gossip().is_err());
        assert!(matches!(
            args(None, Some(true)).gossip(),
            Ok(GossipSecurity::Plain)
        ));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = ClusterSecurity {
            gossip_key: Some("/nonexistent/file.key".into()),
            insecure: Some(true),
        };
        let a = args(None, Some(false)).with_file(&file);
        assert_eq!(a.insecure, Some(false));
        assert_eq!(a.gossip_key.as_deref(), file.gossip_key.as_deref());
        // The file's key is used, and it does not exist: refused, naming it.
        let err = a.gossip().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/file.key"), "{err}");
        let b = args(Some("/flag.key"), None).with_file(&file);
        assert_eq!(b.gossip_key, Some(PathBuf::from("/flag.key")));
        assert_eq!(b.insecure, Some(true));
    }
}
