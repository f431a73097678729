//! `switchboard health`: the container healthcheck. Distroless and scratch
//! images carry no curl or shell, so the binary probes its own HTTP port:
//! one HTTP/1.1 GET, success for a 2xx answer, failure for anything else.
//! A gateway whose client port speaks TLS (`SWITCHBOARD_CLIENT_TLS_CERT`)
//! is probed over `https://`, trusting exactly that certificate.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// A plain or TLS connection to the probed port.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// The URL probed when none is given: `/healthz` on the port the role in
/// this container binds, read from the same environment variables the
/// roles read (`SWITCHBOARD_HTTP` for a node, `SWITCHBOARD_LISTEN` for a
/// gateway or `dev`), so that one HEALTHCHECK line in the image fits every
/// role. An unspecified bind address (`0.0.0.0`) is probed on loopback.
pub(crate) fn default_url() -> String {
    let set = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let bound = ["SWITCHBOARD_HTTP", "SWITCHBOARD_LISTEN"]
        .iter()
        .find_map(|var| set(var));
    // A node's HTTP port is plain; a gateway's speaks TLS when given a certificate.
    let tls = set("SWITCHBOARD_HTTP").is_none() && set("SWITCHBOARD_CLIENT_TLS_CERT").is_some();
    let url = url_for(bound.as_deref());
    if tls {
        url.replacen("http://", "https://", 1)
    } else {
        url
    }
}

fn url_for(bound: Option<&str>) -> String {
    let port = bound
        .and_then(|addr| addr.trim().rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .unwrap_or(8000);
    let host = match bound.and_then(|addr| addr.trim().rsplit_once(':')) {
        Some((host, _)) if !matches!(host, "" | "0.0.0.0" | "[::]" | "::") => host,
        _ => "127.0.0.1",
    };
    format!("http://{host}:{port}/healthz")
}

/// `http://HOST:PORT/PATH` (or `https://`), split.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    path: String,
    tls: bool,
}

fn parse(url: &str) -> anyhow::Result<Target> {
    let (rest, tls) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("http://")
                .with_context(|| format!("{url:?}: only http:// and https:// URLs are probed"))?,
            false,
        ),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (
            host,
            port.parse::<u16>()
                .with_context(|| format!("{url:?}: bad port {port:?}"))?,
        ),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("{url:?}: no host");
    }
    Ok(Target {
        host: host.to_owned(),
        port,
        path: path.to_owned(),
        tls,
    })
}

/// GETs `url` within `timeout` and returns the status code.
pub(crate) async fn probe(url: &str, timeout: Duration) -> anyhow::Result<u16> {
    let target = parse(url)?;
    let exchange = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        let mut stream: Box<dyn Stream> = if target.tls {
            let cert = std::env::var_os("SWITCHBOARD_CLIENT_TLS_CERT").context(
                "https:// is probed trusting SWITCHBOARD_CLIENT_TLS_CERT, which is unset",
            )?;
            let config = crate::pinned_cert::client_config(cert.as_ref())?;
            // The pinned certificate is checked, not the name: any valid name will do.
            let name = rustls_pki_types::ServerName::try_from("localhost")?;
            Box::new(TlsConnector::from(config).connect(name, tcp).await?)
        } else {
            Box::new(tcp)
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: switchboard-health\r\nConnection: close\r\n\r\n",
            target.path, target.host, target.port
        );
        stream.write_all(request.as_bytes()).await?;
        // The status line is all we need; stop reading once it is in.
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("GET {url}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET {url}"))?;
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    line.split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {url}: not an HTTP answer: {line:?}"))
}

/// The subcommand: fails (exit status 1) unless `url` answers 2xx.
pub(crate) fn run(url: Option<String>, timeout: Duration) -> anyhow::Result<()> {
    let url = url.unwrap_or_else(default_url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(probe(&url, timeout))?;
    if !(200..300).contains(&status) {
        bail!("GET {url}: status {status}");
    }
    println!("GET {url}: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse("http://127.0.0.1:9000/healthz").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/healthz".into(),
                tls: false,
            }
        );
        assert_eq!(
            parse("http://[::1]:8000").unwrap(),
            Target {
                host: "::1".into(),
                port: 8000,
                path: "/".into(),
                tls: false,
            }
        );
        assert_eq!(parse("http://b1/readyz").unwrap().port, 80);
        let https = parse("https://b1:9000/healthz").unwrap();
        assert!(https.tls && https.port == 9000);
        assert_eq!(parse("https://b1/healthz").unwrap().port, 443);
        assert!(parse("ftp://b1:9000/healthz").is_err());
        assert!(parse("http://b1:x/healthz").is_err());
        assert!(parse("http://:9000/").is_err());
    }

    #[test]
    fn default_url_follows_the_role_bind_address() {
        assert_eq!(url_for(None), "http://127.0.0.1:8000/healthz");
        assert_eq!(
            url_for(Some("0.0.0.0:9000")),
            "http://127.0.0.1:9000/healthz"
        );
        assert_eq!(url_for(Some("[::]:8000")), "http://127.0.0.1:8000/healthz");
        assert_eq!(
            url_for(Some("10.1.2.3:8080")),
            "http://10.1.2.3:8080/healthz"
        );
    }

    #[tokio::test]
    async fn probe_reads_the_status_of_a_real_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for answer in ["HTTP/1.1 200 OK", "HTTP/1.1 503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.1\r\n"));
                let reply = format!("{answer}\r\ncontent-length: 0\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let url = format!("http://{addr}/healthz");
        assert_eq!(probe(&url, Duration::from_secs(5)).await.unwrap(), 200);
        assert_eq!(probe(&url, Duration::from_secs(5)).await.unwrap(), 503);
        server.await.unwrap();
        // Nothing listens any more: refused, promptly.
        assert!(probe(&url, Duration::from_secs(5)).await.is_err());
    }
}
