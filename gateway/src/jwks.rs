//! A JWKS document (`gateway.auth.jwks`): a local file, or a URL fetched
//! over HTTPS (rustls, no redirects, no proxy), bounded in size and time,
//! and read again every `jwks_refresh`. A document that cannot be read or
//! parsed leaves the keys held before in use.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::{
    config::AuthConfig,
    key_set::{JwksError, KeyError, KeySet},
};

/// Retry delay after a failed read, when `jwks_refresh` is longer: keys
/// missing at start (the identity provider down) arrive soon after it is back.
const RETRY: Duration = Duration::from_secs(5);

enum Source {
    File(PathBuf),
    Https {
        uri: Uri,
        host: String,
        port: u16,
        tls: TlsConnector,
    },
}

/// The JWKS keys currently held, and where they come from.
pub struct Jwks {
    source: Source,
    location: String,
    refresh: Duration,
    timeout: Duration,
    max_bytes: usize,
    keys: RwLock<Arc<KeySet>>,
}

impl Jwks {
    /// The configured document, not yet read; `None` without `auth.jwks`.
    pub fn new(config: &AuthConfig) -> Result<Option<Self>, KeyError> {
        let Some(location) = &config.jwks else {
            return Ok(None);
        };
        let source = if location.starts_with("https://") {
            let uri: Uri = location
                .parse()
                .map_err(|_| KeyError::Jwks(format!("{location} is not a valid URL")))?;
            // An IPv6 literal comes bracketed; the name to verify is bare.
            let host = uri
                .host()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| KeyError::Jwks(format!("{location} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tls = TlsConnector::from(Arc::new(tls_config(config.jwks_ca.as_deref())?));
            Source::Https {
                uri,
                host,
                port,
                tls,
            }
        } else if location.contains("://") {
            return Err(KeyError::Jwks(format!(
                "{location}: only https:// URLs and file paths are accepted"
            )));
        } else {
            Source::File(PathBuf::from(location))
        };
        Ok(Some(Self {
            source,
            location: location.clone(),
            refresh: config.jwks_refresh.max(Duration::from_millis(10)),
            timeout: config.jwks_timeout,
            max_bytes: config.jwks_max_bytes,
            keys: RwLock::new(Arc::new(KeySet::default())),
        }))
    }

    /// The keys of the last document read.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().clone()
    }

    /// Reads the document once and, if it is valid, holds its keys.
    pub async fn load(&self) -> Result<usize, JwksError> {
        let doc = match tokio::time::timeout(self.timeout, self.read()).await {
            Ok(doc) => doc?,
            Err(_) => {
                return Err(JwksError::Fetch(
                    self.location.clone(),
                    format!("no answer within {:?}", self.timeout),
                ));
            }
        };
        let set = KeySet::from_jwks(&doc)?;
        let n = set.len();
        *self.keys.write() = Arc::new(set);
        Ok(n)
    }

    /// Reads the document every `jwks_refresh` until `shutdown`; after a
    /// failure, again within [`RETRY`].
    pub async fn keep_fresh(self: Arc<Self>, mut last_ok: bool, shutdown: CancellationToken) {
        loop {
            let wait = if last_ok {
                self.refresh
            } else {
                self.refresh.min(RETRY)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            last_ok = self.load_logged().await;
        }
    }

    /// [`Jwks::load`], logging the outcome; true if it succeeded.
    pub async fn load_logged(&self) -> bool {
        let started = Instant::now();
        match self.load().await {
            Ok(keys) => {
                tracing::debug!(jwks = %self.location, keys, took = ?started.elapsed(), "JWKS read");
                true
            }
            Err(e) => {
                tracing::warn!(jwks = %self.location, error = %e, "JWKS not read; keeping the keys held");
                false
            }
        }
    }

    async fn read(&self) -> Result<Vec<u8>, JwksError> {
        match &self.source {
            Source::File(path) => {
                use tokio::io::AsyncReadExt;
                let read = |e| JwksError::Read(self.location.clone(), e);
                let file = tokio::fs::File::open(path).await.map_err(read)?;
                let mut doc = Vec::new();
                // One byte more than allowed tells a file too large from
                // one just large enough, without reading all of it.
                file.take(self.max_bytes as u64 + 1)
                    .read_to_end(&mut doc)
                    .await
                    .map_err(read)?;
                if doc.len() > self.max_bytes {
                    return Err(JwksError::TooLarge(self.max_bytes));
                }
                Ok(doc)
            }
            Source::Https {
                uri,
                host,
                port,
                tls,
            } => self
                .fetch(uri, host, *port, tls)
                .await
                .map_err(|e| match e {
                    Fetch::TooLarge => JwksError::TooLarge(self.max_bytes),
                    Fetch::Other(why) => JwksError::Fetch(self.location.clone(), why),
                }),
        }
    }

    async fn fetch(
        &self,
        uri: &Uri,
        host: &str,
        port: u16,
        tls: &TlsConnector,
    ) -> Result<Vec<u8>, Fetch> {
        let name = ServerName::try_from(host.to_owned()).map_err(Fetch::other)?;
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(Fetch::other)?;
        let stream = tls.connect(name, tcp).await.map_err(Fetch::other)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Fetch::other)?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = Request::get(path)
            .header(header::HOST, uri.authority().map_or(host, |a| a.as_str()))
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(Fetch::other)?;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(Fetch::other)?;
            if response.status() != StatusCode::OK {
                return Err(Fetch::Other(format!("HTTP {}", response.status())));
            }
            let body = Limited::new(response.into_body(), self.max_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Fetch::TooLarge
                    } else {
                        Fetch::Other(e.to_string())
                    }
                })?;
            Ok(body.to_bytes().to_vec())
        };
        // The connection is driven here, beside the exchange, rather than
        // in a task of its own. It may end first (`connection: close`,
        // body already buffered) without the exchange having failed; if it
        // fails, the exchange fails too.
        let drive = async {
            let _ = conn.await;
            std::future::pending().await
        };
        tokio::select! {
            result = exchange => result,
            never = drive => never,
        }
    }
}

enum Fetch {
    TooLarge,
    Other(String),
}

impl Fetch {
    fn other(e: impl std::fmt::Display) -> Self {
        Fetch::Other(e.to_string())
    }
}

/// rustls on ring, trusting `ca` (a PEM file) if given, else Mozilla's roots.
fn tls_config(ca: Option<&str>) -> Result<ClientConfig, KeyError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| KeyError::Jwks(format!("jwks_ca {path}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(KeyError::Jwks(format!("jwks_ca {path}: no certificate")));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // The provider is named, not taken from a process default, which would
    // be ambiguous if another crate enabled a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KeyError::Jwks(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(location: &str) -> Result<Option<Jwks>, KeyError> {
        Jwks::new(&AuthConfig {
            jwks: Some(location.into()),
            ..Default::default()
        })
    }

    #[test]
    fn only_https_urls_and_paths() {
        assert!(jwks("http://idp.test/jwks.json").is_err());
        assert!(jwks("https:///jwks.json").is_err());
        assert!(jwks("https://[::1]:8443/jwks.json").unwrap().is_some());
        assert!(jwks("/etc/switchboard/jwks.json").unwrap().is_some());
        assert!(Jwks::new(&AuthConfig::default()).unwrap().is_none());
    }
}
