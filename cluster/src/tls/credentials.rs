//! A node's TLS credentials: the cluster CA, its certificate and its key,
//! read from three PEM files into the rustls configurations both ends of a
//! connection use. Either end demands a certificate from the CA of the
//! other (mutual TLS); HTTP/2 is negotiated by ALPN.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::identity::{IdentityError, PeerIdentity, cert_info};

/// Where a node's credentials live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate(s): peers must present one it signed.
    /// Several CAs in one file are all trusted (how a CA is rotated).
    pub ca: PathBuf,
    /// This node's certificate (chain), identity SAN included.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// The three files' contents, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsBytes {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl TlsBytes {
    pub(crate) fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            ca: read(&files.ca)?,
            cert: read(&files.cert)?,
            key: read(&files.key)?,
        })
    }
}

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: no PEM {expected} found ({detail})")]
    Pem {
        what: &'static str,
        expected: &'static str,
        detail: String,
    },
    #[error("the certificate's identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("the certificate names {found}, but this node is {expected}")]
    /// `expected` is who the node was started as (`--name`, its role).
    NotMe {
        expected: PeerIdentity,
        found: PeerIdentity,
    },
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the CA certificates cannot verify clients: {0}")]
    Verifier(String),
}

/// Loaded credentials: what this node presents and whom it trusts.
#[derive(Debug)]
pub struct Credentials {
    /// Who this node's certificate says it is.
    pub identity: PeerIdentity,
    /// The serial of this node's certificate, in hex.
    pub serial: String,
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
}

impl Credentials {
    /// Reads and checks `files`: the certificate must cover `expected`
    /// ([`PeerIdentity::covers`]).
    pub fn load(files: &TlsFiles, expected: &PeerIdentity) -> Result<Self, TlsError> {
        Self::from_bytes(&TlsBytes::read(files)?, expected)
    }

    pub(crate) fn from_bytes(bytes: &TlsBytes, expected: &PeerIdentity) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots(&bytes.ca)?);
        let chain = chain(&bytes.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&bytes.key).map_err(|e| TlsError::Pem {
            what: "the key file",
            expected: "private key",
            detail: e.to_string(),
        })?;
        let info = cert_info(&chain[0])?;
        if !info.identity.covers(&expected.name, expected.role) {
            return Err(TlsError::NotMe {
                expected: expected.clone(),
                found: info.identity,
            });
        }
        let server = server_config(&provider, roots.clone(), chain.clone(), key.clone_key())?;
        let client = client_config(&provider, roots, chain, key)?;
        Ok(Self {
            identity: info.identity,
            serial: info.serial,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let verifier: Arc<dyn ClientCertVerifier> =
        WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            what: "the CA file",
            expected: "certificate",
            detail: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            what: "the CA file",
            expected: "certificate",
            detail: "the file holds none".into(),
        });
    }
    Ok(roots)
}

fn chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "the certificate file",
            expected: "certificate",
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            what: "the certificate file",
            expected: "certificate",
            detail: "the file holds none".into(),
        });
    }
    Ok(chain)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::{membership::Role, tls::authority::CertificateAuthority};

    fn creds(ca_pem: &str, ca: &CertificateAuthority, name: &str, role: Role) -> Credentials {
        let pem = ca.issue(name, role, &[], 1).unwrap();
        let bytes = TlsBytes {
            ca: ca_pem.as_bytes().to_vec(),
            cert: pem.cert.into_bytes(),
            key: pem.key.into_bytes(),
        };
        let me = PeerIdentity {
            name: name.into(),
            role,
        };
        Credentials::from_bytes(&bytes, &me).unwrap()
    }

    /// One real TLS handshake over an in-memory pipe: `client` dials
    /// `server` expecting the server to be `dialed`.
    async fn handshake(server: &Credentials, client: &Credentials, dialed: &str) -> bool {
        let (a, b) = tokio::io::duplex(1 << 16);
        let acceptor = TlsAcceptor::from(server.server.clone());
        let connector = TlsConnector::from(client.client.clone());
        let name = rustls_pki_types::ServerName::try_from(dialed.to_owned()).unwrap();
        let (s, c) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
        s.is_ok() && c.is_ok()
    }

    #[tokio::test]
    async fn both_ends_need_the_cluster_ca_and_the_dialed_name() {
        let ca = CertificateAuthority::generate().unwrap();
        let other = CertificateAuthority::generate().unwrap();
        let ca_pem = ca.pem().cert.clone();
        let b1 = creds(&ca_pem, &ca, "b1", Role::Broker);
        let g1 = creds(&ca_pem, &ca, "g1", Role::Gateway);
        assert!(handshake(&b1, &g1, "b1.broker.switchboard").await);
        assert!(
            !handshake(&b1, &g1, "b2.broker.switchboard").await,
            "wrong name"
        );
        assert!(
            !handshake(&b1, &g1, "b1.gateway.switchboard").await,
            "wrong role"
        );
        let forged = creds(&other.pem().cert, &other, "g1", Role::Gateway);
        assert!(
            !handshake(&b1, &forged, "b1.broker.switchboard").await,
            "another CA"
        );

        // A bundle of two CAs trusts both: how a CA is rotated.
        let bundle = format!("{}{}", ca.pem().cert, other.pem().cert);
        let b1_both = creds(&bundle, &ca, "b1", Role::Broker);
        let g1_new = creds(&bundle, &other, "g1", Role::Gateway);
        assert!(handshake(&b1_both, &g1, "b1.broker.switchboard").await);
        assert!(handshake(&b1_both, &g1_new, "b1.broker.switchboard").await);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_or_a_name_that_is_not_mine_is_refused() {
        let ca = CertificateAuthority::generate().unwrap();
        let (a, b) = (
            ca.issue("b1", Role::Broker, &[], 1).unwrap(),
            ca.issue("b1", Role::Broker, &[], 1).unwrap(),
        );
        let me = PeerIdentity {
            name: "b1".into(),
            role: Role::Broker,
        };
        let mixed = TlsBytes {
            ca: ca.pem().cert.clone().into_bytes(),
            cert: a.cert.clone().into_bytes(),
            key: b.key.into_bytes(),
        };
        assert!(matches!(
            Credentials::from_bytes(&mixed, &me),
            Err(TlsError::Rustls(_))
        ));
        let right = TlsBytes {
            key: a.key.into_bytes(),
            ..mixed
        };
        let b2 = PeerIdentity {
            name: "b2".into(),
            role: Role::Broker,
        };
        assert!(matches!(
            Credentials::from_bytes(&right, &b2),
            Err(TlsError::NotMe { .. })
        ));
        assert!(Credentials::from_bytes(&right, &me).is_ok());
    }
}
