//! The flags of TLS on a gateway's public ports (`dev` and `gateway`),
//! over the config's `[gateway.tls]`.

use std::path::{Path, PathBuf};

use switchboard_gateway::{EdgeTlsConfig, GatewayConfig};

use crate::config::Config;

/// TLS on the client port and the API port (docs/operations.md#tls).
#[derive(clap::Args, Debug, Default)]
pub(crate) struct EdgeTlsArgs {
    /// PEM certificate chain of the client port (and of the API port
    /// unless `--api-tls-cert`): clients then use wss:// and https://.
    /// Re-read when the file changes.
    #[arg(long, env = "SWITCHBOARD_CLIENT_TLS_CERT", requires = "client_tls_key")]
    client_tls_cert: Option<PathBuf>,
    /// PEM private key of `--client-tls-cert`.
    #[arg(long, env = "SWITCHBOARD_CLIENT_TLS_KEY", requires = "client_tls_cert")]
    client_tls_key: Option<PathBuf>,
    /// PEM certificate chain of the API port (`--api-listen`,
    /// `api.listen`), when it differs from the client port's.
    #[arg(long, env = "SWITCHBOARD_API_TLS_CERT", requires_all = ["api_tls_key", "client_tls_cert"])]
    api_tls_cert: Option<PathBuf>,
    /// PEM private key of `--api-tls-cert`.
    #[arg(long, env = "SWITCHBOARD_API_TLS_KEY", requires = "api_tls_cert")]
    api_tls_key: Option<PathBuf>,
}

impl EdgeTlsArgs {
    /// The config file at `path` (or the embedded default), with the flags over it.
    pub(crate) fn config(self, path: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = Config::load(path)?;
        self.apply(&mut config.gateway);
        Ok(config)
    }

    /// The flags over the config file's `[gateway.tls]`.
    fn apply(self, gateway: &mut GatewayConfig) {
        let (Some(cert), Some(key)) = (self.client_tls_cert, self.client_tls_key) else {
            return;
        };
        let reload_every = gateway.tls.as_ref().map(|t| t.reload_every);
        let mut tls = EdgeTlsConfig::new(cert, key);
        if let Some(every) = reload_every {
            tls.reload_every = every;
        }
        tls.api_cert = self.api_tls_cert;
        tls.api_key = self.api_tls_key;
        gateway.tls = Some(tls);
    }
}

/// `wss` when the client port speaks TLS, else `ws`: for the log line that
/// tells users (and the tests) where to connect.
pub(crate) fn ws_scheme(gateway: &GatewayConfig) -> &'static str {
    if gateway.tls.is_some() { "wss" } else { "ws" }
}
