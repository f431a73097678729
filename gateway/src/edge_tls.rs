//! [`EdgeTls`]: TLS on a gateway's public listeners (the client port and
//! the server API's), from a certificate and key in PEM files, re-read
//! when the files change. Each new handshake takes the certificate current
//! at that moment; open connections keep theirs, so a renewal drops
//! nothing. Files are polled by content, which also sees Kubernetes' swap
//! of a mounted secret's symlink (the same approach as the cluster's
//! `TlsContext`).
//!
//! ALPN offers `h2` (the gRPC API, HTTP/2 API calls) and `http/1.1`
//! (`wss://`, the JSON API); the server tells them apart by the first
//! bytes, as on a plaintext port. A peer that speaks plain HTTP to a TLS
//! port gets `400` with a one-line reason and is closed; any other failed
//! handshake is closed and counted.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{config::EdgeTlsConfig, edge_stream::EdgeStream};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain HTTP client gets from a TLS port before it is closed.
const PLAINTEXT_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\
Content-Type: text/plain\r\nContent-Length: 54\r\n\r\n\
this port speaks TLS only: use https:// or wss:// here\n";

/// Why the edge certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EdgeTlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM {expected} found ({detail})")]
    Pem {
        path: PathBuf,
        expected: &'static str,
        detail: String,
    },
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(&'static str),
}

/// A listener's TLS, or `None` for plaintext.
pub type ListenerTls = Option<Arc<EdgeTls>>;

/// One listener's certificate, shared by its handshakes.
#[derive(Debug)]
pub struct EdgeTls {
    /// `client` or `api`, in logs and metrics.
    listener: &'static str,
    cert: PathBuf,
    key: PathBuf,
    reload_every: Duration,
    current: RwLock<Arc<ServerConfig>>,
}

/// The two files' contents, as last read.
#[derive(PartialEq, Eq)]
struct EdgeBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl EdgeTls {
    /// The client listener's and the API listener's TLS, from `config`:
    /// the API's has files of its own or shares the client's. `None`: plain.
    pub fn from_config(
        config: Option<&EdgeTlsConfig>,
    ) -> Result<(ListenerTls, ListenerTls), EdgeTlsError> {
        let Some(config) = config else {
            return Ok((None, None));
        };
        let client = Self::load("client", &config.cert, &config.key, config.reload_every)?;
        let api = match (&config.api_cert, &config.api_key) {
            (Some(cert), Some(key)) => Self::load("api", cert, key, config.reload_every)?,
            (None, None) => client.clone(),
            _ => {
                return Err(EdgeTlsError::Config(
                    "api_cert and api_key go together (or neither, to share cert and key)",
                ));
            }
        };
        Ok((Some(client), Some(api)))
    }

    /// Loads `cert` (a chain, leaf first) and `key`.
    pub fn load(
        listener: &'static str,
        cert: &Path,
        key: &Path,
        reload_every: Duration,
    ) -> Result<Arc<Self>, EdgeTlsError> {
        let bytes = EdgeBytes::read(cert, key)?;
        let config = server_config(&bytes, cert, key)?;
        Ok(Arc::new(Self {
            listener,
            cert: cert.to_owned(),
            key: key.to_owned(),
            reload_every,
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// Re-reads the files every `reload_every` until `shutdown`, in a task
    /// on `tracker`.
    pub fn watch(self: &Arc<Self>, tracker: &TaskTracker, shutdown: CancellationToken) {
        let this = self.clone();
        tracker.spawn(async move {
            let mut seen = EdgeBytes::read(&this.cert, &this.key).ok();
            let mut ticks = tokio::time::interval(this.reload_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => this.reload_if_changed(&mut seen),
                }
            }
        });
    }

    /// Takes the files if they changed since `seen` and load; a change
    /// that does not load (a half-written renewal, a key that does not
    /// match) is logged once and retried when the files change again.
    fn reload_if_changed(&self, seen: &mut Option<EdgeBytes>) {
        let listener = self.listener;
        let bytes = match EdgeBytes::read(&self.cert, &self.key) {
            Ok(bytes) => bytes,
            Err(e) => {
                if seen.take().is_some() {
                    tracing::error!(listener, error = %e, "edge TLS files unreadable; keeping the loaded certificate");
                    reloaded(listener, "error");
                }
                return;
            }
        };
        if seen.as_ref() == Some(&bytes) {
            return;
        }
        let loaded = server_config(&bytes, &self.cert, &self.key);
        *seen = Some(bytes);
        match loaded {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                tracing::info!(listener, "edge TLS certificate reloaded");
                reloaded(listener, "ok");
            }
            Err(e) => {
                tracing::error!(listener, error = %e, "edge TLS files changed but do not load; keeping the loaded certificate");
                reloaded(listener, "error");
            }
        }
    }

    /// The TLS side of one accepted connection, within `timeout`; `None`
    /// (the socket closed, the refusal counted) when it fails.
    pub async fn accept(&self, stream: TcpStream, timeout: Duration) -> Option<EdgeStream> {
        let acceptor = TlsAcceptor::from(self.current.read().clone());
        let listener = self.listener;
        let handshake = async move {
            let mut stream = stream;
            if !starts_with_tls(&mut stream).await {
                return Err("plaintext");
            }
            acceptor.accept(stream).await.map_err(|e| {
                tracing::debug!(listener, error = %e, "edge TLS handshake failed");
                "handshake"
            })
        };
        let reason = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => return Some(EdgeStream::Tls(Box::new(tls))),
            Ok(Err(reason)) => reason,
            Err(_) => "timeout",
        };
        metrics::counter!("switchboard_edge_tls_refused_total", "listener" => self.listener, "reason" => reason)
            .increment(1);
        None
    }
}

/// `stream` as served: plain without `tls`, else after its handshake
/// (`None` when that fails).
pub async fn accept(
    tls: Option<&EdgeTls>,
    stream: TcpStream,
    timeout: Duration,
) -> Option<EdgeStream> {
    match tls {
        None => Some(EdgeStream::Plain(stream)),
        Some(tls) => tls.accept(stream, timeout).await,
    }
}

/// Whether the peer opens with a TLS record; if it sent something else
/// (plain HTTP, most likely) it is told so in HTTP and the socket closed.
async fn starts_with_tls(stream: &mut TcpStream) -> bool {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == TLS_HANDSHAKE_RECORD => true,
        Ok(1) => {
            // Best effort: the peer may already be gone.
            let _ = stream.write_all(PLAINTEXT_REFUSAL).await;
            let _ = stream.shutdown().await;
            false
        }
        _ => false,
    }
}

fn reloaded(listener: &'static str, result: &'static str) {
    metrics::counter!("switchboard_edge_tls_reloads_total", "listener" => listener, "result" => result)
        .increment(1);
}

impl EdgeBytes {
    fn read(cert: &Path, key: &Path) -> Result<Self, EdgeTlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| EdgeTlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok(Self {
            cert: read(cert)?,
            key: read(key)?,
        })
    }
}

/// A server configuration for `bytes`: the chain and its key, no client
/// certificates, ALPN `h2` and `http/1.1`.
fn server_config(
    bytes: &EdgeBytes,
    cert_path: &Path,
    key_path: &Path,
) -> Result<ServerConfig, EdgeTlsError> {
    let pem_error = |path: &Path, expected, detail: String| EdgeTlsError::Pem {
        path: path.to_owned(),
        expected,
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(&bytes.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, "certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            cert_path,
            "certificate",
            "the file holds none".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&bytes.key)
        .map_err(|e| pem_error(key_path, "private key", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(name: &str) -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }

    fn load(cert: Vec<u8>, key: Vec<u8>) -> Result<ServerConfig, EdgeTlsError> {
        let bytes = EdgeBytes { cert, key };
        server_config(&bytes, Path::new("tls.crt"), Path::new("tls.key"))
    }

    #[test]
    fn a_matching_pair_loads_with_both_alpn_protocols() {
        let (cert, key) = pem_pair("localhost");
        let config = load(cert, key).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        let (cert, key) = pem_pair("localhost");
        let (_, other_key) = pem_pair("other");
        let mismatch = load(cert.clone(), other_key).unwrap_err();
        assert!(matches!(mismatch, EdgeTlsError::Rustls(_)), "{mismatch}");
        let no_cert = load(key.clone(), key).unwrap_err().to_string();
        assert!(
            no_cert.contains("tls.crt") && no_cert.contains("certificate"),
            "{no_cert}"
        );
        let no_key = load(cert.clone(), cert).unwrap_err().to_string();
        assert!(
            no_key.contains("tls.key") && no_key.contains("private key"),
            "{no_key}"
        );
    }

    #[test]
    fn half_an_api_pair_is_refused() {
        let mut config = EdgeTlsConfig::new("a.crt".into(), "a.key".into());
        config.api_key = Some("b.key".into());
        // Fails on reading the client files first: make them real.
        let dir = std::env::temp_dir().join(format!("edge-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = pem_pair("localhost");
        std::fs::write(dir.join("a.crt"), cert).unwrap();
        std::fs::write(dir.join("a.key"), key).unwrap();
        config.cert = dir.join("a.crt");
        config.key = dir.join("a.key");
        let err = EdgeTls::from_config(Some(&config)).unwrap_err();
        assert!(matches!(err, EdgeTlsError::Config(_)), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
