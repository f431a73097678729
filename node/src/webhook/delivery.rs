//! One webhook endpoint's task: it drives the endpoint's [`Outbox`] and
//! sends each batch as one signed POST (Pusher's body `{"time_ms",
//! "events"}`, `X-Pusher-Key`, `X-Pusher-Signature`: the body's
//! HMAC-SHA256 under the app secret, in hex).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Uri, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use sha2::Sha256;
use tokio::{net::TcpStream, sync::mpsc, time::Instant};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::{
    Queued, WebhookSettings,
    outbox::{Next, Outbox, Settled},
};

/// Signs bodies for one app.
pub(super) struct Signer {
    key: String,
    secret: Vec<u8>,
}

impl Signer {
    pub(super) fn new(key: &str, secret: &str) -> Self {
        Self {
            key: key.to_owned(),
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn sign(&self, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

pub(super) struct Endpoint {
    url: String,
    signer: Arc<Signer>,
    timeout: Duration,
    outbox: Outbox<Queued>,
}

type Sending = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

impl Endpoint {
    pub(super) fn new(
        endpoint: &super::Endpoint,
        signer: Arc<Signer>,
        settings: &WebhookSettings,
    ) -> Self {
        Self {
            url: endpoint.url.clone(),
            signer,
            timeout: settings.timeout,
            outbox: Outbox::new(settings.queue, settings.batch_max, settings.retry_for),
        }
    }

    /// Sends what arrives on `events` until `shutdown`.
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<Queued>,
        shutdown: CancellationToken,
    ) {
        let mut sending: Option<Sending> = None;
        let mut wake = None;
        loop {
            if sending.is_none() {
                wake = None;
                match self.outbox.next(Instant::now().into_std()) {
                    Next::Send(batch) => {
                        sending = Some(request(&self.url, &self.signer, self.timeout, batch));
                    }
                    Next::WaitUntil(at) => wake = Some(Instant::from_std(at)),
                    Next::Busy | Next::Idle => {}
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                done = async { sending.as_mut().expect("checked").await }, if sending.is_some() => {
                    sending = None;
                    self.settle(done);
                }
                event = events.recv() => match event {
                    Some(event) => self.queue(event),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
    }

    fn queue(&mut self, event: Queued) {
        if self.outbox.push(event).is_err() {
            metrics::counter!("switchboard_webhook_events_total", "result" => "dropped_full")
                .increment(1);
        } else {
            metrics::gauge!("switchboard_webhook_queue").increment(1.0);
        }
    }

    fn settle(&mut self, done: Result<(), String>) {
        let ok = done.is_ok();
        let result = if ok { "ok" } else { "failed" };
        metrics::counter!("switchboard_webhook_requests_total", "result" => result).increment(1);
        match self.outbox.settle(ok, Instant::now().into_std()) {
            Settled::Delivered { events, .. } => {
                metrics::counter!("switchboard_webhook_events_total", "result" => "delivered")
                    .increment(events as u64);
                metrics::gauge!("switchboard_webhook_queue").decrement(events as f64);
            }
            Settled::Retrying { .. } => {
                let error = done.err().unwrap_or_default();
                tracing::warn!(endpoint = %host_of(&self.url), error = %error, "webhook not delivered; will retry");
            }
            Settled::Dropped { events } => {
                tracing::warn!(endpoint = %host_of(&self.url), events, "webhook batch dropped after its retries");
                metrics::counter!("switchboard_webhook_events_total", "result" => "dropped_retries")
                    .increment(events as u64);
                metrics::gauge!("switchboard_webhook_queue").decrement(events as f64);
            }
        }
    }
}

/// The POST of `batch`, ready to be awaited.
fn request(url: &str, signer: &Signer, timeout: Duration, batch: &[Queued]) -> Sending {
    let time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = serde_json::to_vec(&serde_json::json!({ "time_ms": time_ms, "events": batch }))
        .expect("JSON values serialise");
    let signature = signer.sign(&body);
    let (url, key) = (url.to_owned(), signer.key.clone());
    Box::pin(async move {
        let post = post(&url, &key, &signature, Bytes::from(body));
        match tokio::time::timeout(timeout, post).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    })
}

/// The endpoint's host, for logs: a URL may carry credentials in its
/// user info or query.
fn host_of(url: &str) -> String {
    url.parse::<Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

async fn post(url: &str, key: &str, signature: &str, body: Bytes) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("url without host")?.to_owned();
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("url must be http:// or https://".into()),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let request = Request::post(path)
        .header(
            header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Pusher-Key", key)
        .header("X-Pusher-Signature", signature)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    if tls {
        let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
        let stream = connector()
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        exchange(TokioIo::new(stream), request).await
    } else {
        exchange(TokioIo::new(tcp), request).await
    }
}

async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<(), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // Driven beside the exchange: it may end first (`connection: close`).
    let drive = async {
        let _ = conn.await;
        std::future::pending::<Result<(), String>>().await
    };
    let send = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    };
    tokio::select! {
        result = send => result,
        never = drive => never,
    }
}

fn connector() -> TlsConnector {
    static CONNECTOR: std::sync::OnceLock<TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
            TlsConnector::from(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_of_the_body() {
        // Pusher's documented example key/secret pair.
        let s = Signer::new("278d425bdf160c739803", "7ad3773142a6692b25b8");
        let sig = s.sign(br#"{"time_ms":1,"events":[]}"#);
        assert_eq!(sig.len(), 64);
        assert!(
            sig.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(sig, s.sign(br#"{"time_ms":2,"events":[]}"#));
    }

    #[test]
    fn logs_name_the_host_only() {
        assert_eq!(
            host_of("https://user:pw@hooks.example.com/x?token=s"),
            "hooks.example.com"
        );
    }
}
