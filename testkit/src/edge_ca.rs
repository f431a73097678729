//! Certificates for the gateway's public listeners in tests: a CA of the
//! test's own (what a company CA or Let's Encrypt is in production) and
//! server certificates for `localhost` and `127.0.0.1`, written to a
//! temporary directory, and rustls client configurations that trust it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;

/// A CA in a directory of its own, removed when dropped.
pub struct EdgeCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
}

/// A server certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct EdgeCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate, DER: what a client sees as the peer certificate.
    pub der: Vec<u8>,
}

impl EdgeCa {
    /// A new CA in a new temporary directory, its certificate at [`Self::ca_cert`].
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-edge-ca-{}-{}",
            std::process::id(),
            crate::process::free_port()?
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "switchboard test edge CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        std::fs::write(dir.join("ca.crt"), cert.pem())?;
        let cert_der = cert.der().clone();
        let issuer = Issuer::new(params, key);
        Ok(Self {
            dir,
            issuer,
            cert_der,
        })
    }

    /// The CA certificate's path (PEM): `NODE_EXTRA_CA_CERTS`, `curl --cacert`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// A server certificate for `localhost` and `127.0.0.1` with common
    /// name `subject`, at `STEM.crt` and `STEM.key` (replaced whole if they
    /// exist: a renewal).
    pub fn issue(&self, stem: &str, subject: &str) -> anyhow::Result<EdgeCert> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject);
        params.distinguished_name = dn;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let paths = EdgeCert {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
            der: cert.der().to_vec(),
        };
        // Written aside and renamed, as a secret mount swaps its files: a
        // reader never sees half a certificate.
        replace(&paths.key, key.serialize_pem().as_bytes())?;
        replace(&paths.cert, cert.pem().as_bytes())?;
        Ok(paths)
    }

    /// A client configuration that trusts this CA only, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("the test CA is valid");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the defaults")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).with_context(|| format!("writing {}", aside.display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

impl Drop for EdgeCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
