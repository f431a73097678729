//! `wss://`: the TLS the client speaks, on rustls. The server's certificate
//! must chain to Mozilla's roots (webpki-roots) or to a root the builder
//! adds (a company CA, a test CA); a whole rustls configuration may be
//! given instead. ALPN offers `http/1.1`, which WebSockets use.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;

/// What the builder was told about TLS.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsOptions {
    /// Trusted besides Mozilla's roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Trust only `extra_roots`.
    pub only_extra_roots: bool,
    /// Used as is, instead of one made from the roots.
    pub config: Option<Arc<ClientConfig>>,
}

impl TlsOptions {
    /// The configuration every `wss://` connection of the client uses.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        if let Some(config) = &self.config {
            return config.clone();
        }
        let mut roots = RootCertStore::empty();
        if !self.only_extra_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        // A root rustls cannot parse would fail every handshake the same
        // way; it is skipped, and verification fails if it was the needed one.
        let _ = roots.add_parsable_certificates(self.extra_roots.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports rustls' default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
