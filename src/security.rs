//! How a node or gateway secures its traffic with the rest of the cluster:
//! mutual TLS with the cluster CA's certificates on every gRPC connection,
//! or `--insecure` for a cluster that trusts its network. Flags win over
//! the environment, which wins over the config file's
//! `[cluster_security]`. Without credentials or `--insecure`, the process
//! refuses to start, naming what is missing.

use std::path::PathBuf;

use serde::Deserialize;
use switchboard_cluster::{
    membership::Role,
    tls::{PeerIdentity, TlsContext, TlsFiles, identity::validate_name},
};

use crate::StartRefused;

/// Cluster security flags, shared by `node` and `gateway`.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct SecurityArgs {
    /// The cluster CA's certificate (PEM): peers must present a
    /// certificate it signed.
    #[arg(long, env = "SWITCHBOARD_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), issued by `switchboard ca issue`
    /// for its --name.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Run without cluster credentials: anyone who reaches the cluster's
    /// ports can act as any node. Only for a network you trust.
    #[arg(
        long,
        env = "SWITCHBOARD_INSECURE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    insecure: Option<bool>,
}

/// The config file's `[cluster_security]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterSecurity {
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure: Option<bool>,
}

/// What a node's gRPC connections run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsSecurity {
    MutualTls(TlsFiles),
    Insecure,
}

impl SecurityArgs {
    /// Resolves flags and environment over `file`; refuses to go on
    /// without credentials unless insecure was asked for.
    pub(crate) fn resolve(self, file: &ClusterSecurity) -> Result<TlsSecurity, StartRefused> {
        let ca = self.tls_ca.or_else(|| file.tls_ca.clone());
        let cert = self.tls_cert.or_else(|| file.tls_cert.clone());
        let key = self.tls_key.or_else(|| file.tls_key.clone());
        let insecure = self.insecure.or(file.insecure).unwrap_or(false);
        match (ca, cert, key) {
            (Some(ca), Some(cert), Some(key)) => {
                if insecure {
                    tracing::warn!("--insecure ignored: TLS credentials are given and used");
                }
                Ok(TlsSecurity::MutualTls(TlsFiles { ca, cert, key }))
            }
            _ if insecure => {
                tracing::warn!(
                    "--insecure: cluster traffic is neither authenticated nor encrypted; \
                     anyone who reaches this node's ports can act as any node"
                );
                Ok(TlsSecurity::Insecure)
            }
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    (ca.is_none(), "--tls-ca"),
                    (cert.is_none(), "--tls-cert"),
                    (key.is_none(), "--tls-key"),
                ]
                .into_iter()
                .filter_map(|(missing, flag)| missing.then_some(flag))
                .collect();
                Err(StartRefused(format!(
                    "cluster credentials missing: {} (or --insecure for a cluster that trusts its network)",
                    missing.join(", ")
                )))
            }
        }
    }
}

impl TlsSecurity {
    /// Loads the TLS credentials for `name` in `role` (its certificate
    /// must name it); `None` when insecure.
    pub(crate) fn load(
        &self,
        name: &str,
        role: Role,
    ) -> Result<Option<std::sync::Arc<TlsContext>>, StartRefused> {
        validate_name(name).map_err(|e| StartRefused(format!("--name: {e}")))?;
        let TlsSecurity::MutualTls(files) = self else {
            return Ok(None);
        };
        let me = PeerIdentity {
            name: name.to_owned(),
            role,
        };
        TlsContext::load(files.clone(), me)
            .map(Some)
            .map_err(|e| StartRefused(format!("TLS credentials: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ca: Option<&str>, insecure: Option<bool>) -> SecurityArgs {
        SecurityArgs {
            tls_ca: ca.map(PathBuf::from),
            insecure,
            ..SecurityArgs::default()
        }
    }

    #[test]
    fn missing_credentials_are_named() {
        let e = args(None, None)
            .resolve(&ClusterSecurity::default())
            .unwrap_err();
        assert_eq!(
            e.0,
            "cluster credentials missing: --tls-ca, --tls-cert, --tls-key \
             (or --insecure for a cluster that trusts its network)"
        );
        let e = args(Some("ca.crt"), None)
            .resolve(&ClusterSecurity::default())
            .unwrap_err();
        assert!(e.0.contains("--tls-cert, --tls-key (or"), "{}", e.0);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = ClusterSecurity {
            tls_ca: Some("file-ca".into()),
            tls_cert: Some("file-cert".into()),
            tls_key: Some("file-key".into()),
            insecure: Some(true),
        };
        let resolved = args(Some("flag-ca"), None).resolve(&file).unwrap();
        assert_eq!(
            resolved,
            TlsSecurity::MutualTls(TlsFiles {
                ca: "flag-ca".into(),
                cert: "file-cert".into(),
                key: "file-key".into(),
            })
        );
        let file = ClusterSecurity {
            insecure: Some(true),
            ..ClusterSecurity::default()
        };
        assert_eq!(
            args(None, None).resolve(&file).unwrap(),
            TlsSecurity::Insecure
        );
        assert!(args(None, Some(false)).resolve(&file).is_err());
    }
}
